// Package rdsiam makes IAM authentication tokens for Amazon RDS and RDS
// Proxy: the password a role with rds-db:connect presents instead of a
// stored one. A token is a SigV4-presigned "connect" request, valid for 15
// minutes, so it is made anew for each connection (postgres.Options.Password).
package rdsiam

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// TokenLifetime is how long a token lets a connection begin; connections
// made with it last beyond it.
const TokenLifetime = 15 * time.Minute

// emptyPayloadHash is the SHA-256 of an empty body.
const emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// Token returns the authentication token of user at endpoint (host:port of
// the database or the proxy) in region, signed with the credentials of
// creds at now. Errors: an empty argument, an endpoint without a port, or
// the credentials' error.
func Token(ctx context.Context, creds aws.CredentialsProvider, region, endpoint, user string, now time.Time) (string, error) {
	if creds == nil || region == "" || user == "" {
		return "", errors.New("rdsiam: credentials, region and user are required")
	}
	if _, port, err := net.SplitHostPort(endpoint); err != nil || port == "" {
		return "", fmt.Errorf("rdsiam: endpoint %q is not host:port", endpoint)
	}
	c, err := creds.Retrieve(ctx)
	if err != nil {
		return "", fmt.Errorf("rdsiam: credentials: %w", err)
	}
	q := url.Values{"Action": {"connect"}, "DBUser": {user}}
	q.Set("X-Amz-Expires", fmt.Sprint(int(TokenLifetime.Seconds())))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+endpoint+"/?"+q.Encode(), nil)
	if err != nil {
		return "", fmt.Errorf("rdsiam: %w", err)
	}
	signed, _, err := v4.NewSigner().PresignHTTP(ctx, c, req, emptyPayloadHash, "rds-db", region, now)
	if err != nil {
		return "", fmt.Errorf("rdsiam: sign: %w", err)
	}
	return strings.TrimPrefix(signed, "https://"), nil
}
