package rdsiam_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/eventcore-go/eventcore/eventlog/postgres/rdsiam"
)

func TestToken(t *testing.T) {
	creds := credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")
	at := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	tok, err := rdsiam.Token(context.Background(), creds, "eu-west-1", "proxy.example.com:5432", "eventcore_app", at)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(tok, "https://") || !strings.HasPrefix(tok, "proxy.example.com:5432/?") {
		t.Fatalf("token %q", tok)
	}
	u, err := url.Parse("https://" + tok)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for k, want := range map[string]string{
		"Action": "connect", "DBUser": "eventcore_app", "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
		"X-Amz-Credential": "AKIDEXAMPLE/20261202/eu-west-1/rds-db/aws4_request", "X-Amz-Date": "20261202T120000Z",
		"X-Amz-Expires": "900", "X-Amz-SignedHeaders": "host",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if len(q.Get("X-Amz-Signature")) != 64 {
		t.Errorf("signature %q", q.Get("X-Amz-Signature"))
	}
	// Another user, another signature.
	other, _ := rdsiam.Token(context.Background(), creds, "eu-west-1", "proxy.example.com:5432", "someone", at)
	if other == tok {
		t.Error("the token does not depend on the user")
	}
}

func TestTokenErrors(t *testing.T) {
	creds := credentials.NewStaticCredentialsProvider("AKID", "secret", "")
	for _, c := range []struct {
		creds                  aws.CredentialsProvider
		region, endpoint, user string
	}{
		{nil, "eu-west-1", "h:5432", "u"},
		{creds, "", "h:5432", "u"},
		{creds, "eu-west-1", "h", "u"},
		{creds, "eu-west-1", "h:5432", ""},
	} {
		if _, err := rdsiam.Token(context.Background(), c.creds, c.region, c.endpoint, c.user, time.Now()); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
