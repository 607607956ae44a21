package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
)

// DefaultSigningService is the service name of an API Gateway API with
// IAM authorization.
const DefaultSigningService = "execute-api"

// signingTransport signs every request with AWS Signature Version 4
// before base sends it: a deployed HTTP API whose routes use IAM
// authorization accepts nothing else.
type signingTransport struct {
	base            http.RoundTripper
	signer          *v4.Signer
	credentials     aws.CredentialsProvider
	region, service string
	now             func() time.Time
}

// newSigningTransport returns a transport over base that signs for
// service in region with the credentials of the default chain (the
// environment, the shared files and profile, SSO, the instance's role).
// An empty region takes the default chain's (AWS_REGION, the profile);
// errors: none can be found, or the configuration cannot be loaded.
func newSigningTransport(ctx context.Context, base http.RoundTripper, region, service string) (*signingTransport, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return nil, fmt.Errorf("-sigv4: AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("-region: no region given and none configured (AWS_REGION, the profile)")
	}
	return &signingTransport{base: base, signer: v4.NewSigner(), credentials: cfg.Credentials,
		region: cfg.Region, service: service, now: time.Now}, nil
}

// emptyHash is the SHA-256 of no payload.
const emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// RoundTrip implements http.RoundTripper: it signs a copy of req (the
// payload's hash read through GetBody) and sends the copy.
func (s *signingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	hash := emptyHash
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, errors.New("sigv4: a request body that cannot be read twice")
		}
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		_, err = io.Copy(h, body)
		_ = body.Close()
		if err != nil {
			return nil, err
		}
		hash = hex.EncodeToString(h.Sum(nil))
	}
	creds, err := s.credentials.Retrieve(req.Context())
	if err != nil {
		return nil, fmt.Errorf("sigv4: credentials: %w", err)
	}
	signed := req.Clone(req.Context())
	if err := s.signer.SignHTTP(req.Context(), creds, signed, hash, s.service, s.region, s.now()); err != nil {
		return nil, fmt.Errorf("sigv4: %w", err)
	}
	return s.base.RoundTrip(signed)
}
