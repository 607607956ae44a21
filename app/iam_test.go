package app

import (
	"context"
	"strings"
	"testing"
)

// With EVENTCORE_DATABASE_IAM_AUTH, each connection's password is a token
// for the URL's user at its host and port, signed for the environment's
// region.
func TestIAMPassword(t *testing.T) {
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	password, err := iamPassword(context.Background(), "postgres://eventcore_app@proxy.example.com/eventcore?sslmode=require")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := password(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"proxy.example.com:5432/?", "DBUser=eventcore_app", "Action=connect", "%2Feu-west-1%2Frds-db%2F"} {
		if !strings.Contains(tok, want) {
			t.Errorf("token %q lacks %q", tok, want)
		}
	}
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	if _, err := iamPassword(context.Background(), "postgres://u@h/db"); err == nil {
		t.Error("no error without a region")
	}
}
