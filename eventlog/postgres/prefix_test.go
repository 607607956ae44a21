package postgres

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPrefixUpperBound(t *testing.T) {
	for _, prefix := range []string{"a", "account-", "груп", "ο", "¿", "ÿ", "\ud7ff", "x\U0010FFFE"} {
		upper, ok := prefixUpperBound(prefix)
		if !ok || !utf8.ValidString(upper) || upper <= prefix {
			t.Fatalf("%q: bound %q %v", prefix, upper, ok)
		}
		for _, s := range []string{prefix, prefix + "\x00", prefix + "zz", prefix + "\U0010FFFF"} {
			if s < prefix || s >= upper {
				t.Errorf("%q starts with %q but is outside [%q, %q)", s, prefix, prefix, upper)
			}
		}
		if strings.HasPrefix(upper, prefix) {
			t.Errorf("the bound %q of %q starts with it", upper, prefix)
		}
	}
	if _, ok := prefixUpperBound("a\U0010FFFF"); ok {
		t.Error("a prefix ending in the last code point has a bound")
	}
}

func FuzzPrefixUpperBound(f *testing.F) {
	f.Add("account-", "account-7")
	f.Add("груп", "группа")
	f.Fuzz(func(t *testing.T, prefix, s string) {
		if prefix == "" || !utf8.ValidString(prefix) || !utf8.ValidString(s) {
			return
		}
		upper, ok := prefixUpperBound(prefix)
		if !ok {
			return
		}
		if !utf8.ValidString(upper) {
			t.Fatalf("bound %q of %q is not valid UTF-8", upper, prefix)
		}
		if inRange := s >= prefix && s < upper; inRange != strings.HasPrefix(s, prefix) {
			t.Fatalf("%q against prefix %q: in [%q, %q) = %v", s, prefix, prefix, upper, inRange)
		}
	})
}
