package webui

import (
	"strings"
	"testing"
	"time"
)

func TestSessionRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := signSession(testKey, "admin", now.Add(sessionTTL))
	user, err := parseSession(testKey, v, now)
	if err != nil || user != "admin" {
		t.Fatalf("parseSession = %q, %v", user, err)
	}
	if _, err := parseSession(testKey, v, now.Add(sessionTTL)); err == nil {
		t.Error("session accepted at its expiry")
	}
	if _, err := parseSession([]byte("another-key-0123456789"), v, now); err == nil {
		t.Error("session accepted under another key")
	}
	if _, err := parseSession(testKey, strings.Repeat("a", maxCookieLen+1), now); err == nil {
		t.Error("oversized cookie accepted")
	}
}

// FuzzParseSession checks that no cookie value crashes the parser and that
// only values carrying a valid signature are accepted.
func FuzzParseSession(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add(signSession(testKey, "admin", now.Add(time.Hour)))
	f.Add(signSession(testKey, "admin", now.Add(-time.Hour)))
	f.Add("YWRtaW4.1800003600.AAAA")
	f.Add("..")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		user, err := parseSession(testKey, v, now)
		if err != nil {
			return
		}
		if user == "" {
			t.Fatal("accepted a session without a user")
		}
		i := strings.LastIndexByte(v, '.')
		if v != signSessionPayload(testKey, v[:i]) {
			t.Fatalf("accepted %q whose signature is not ours", v)
		}
	})
}

func signSessionPayload(key []byte, payload string) string {
	return payload + "." + b64.EncodeToString(sessionMAC(key, payload))
}

// FuzzParseLogin checks that no body crashes the login parser and that an
// accepted body always has a bounded user and password.
func FuzzParseLogin(f *testing.F) {
	f.Add("application/json", []byte(`{"user":"admin","password":"admin"}`))
	f.Add("application/json", []byte(`{"user":"admin"}`))
	f.Add("application/json", []byte(`{"user":"a","password":"b"} x`))
	f.Add("application/x-www-form-urlencoded", []byte(`user=admin&password=admin`))
	f.Add("application/x-www-form-urlencoded; charset=utf-8", []byte(`user=%zz`))
	f.Add("", []byte(`[]`))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		cr, err := parseLogin(contentType, body)
		if err != nil {
			return
		}
		if cr.User == "" || cr.Password == "" || len(cr.User) > maxCredentialLen || len(cr.Password) > maxCredentialLen {
			t.Fatalf("accepted bad credentials %+v", cr)
		}
	})
}
