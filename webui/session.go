package webui

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// sessionCookie is the name of the browser session cookie.
const sessionCookie = "dyad_session"

// sessionTTL is how long a session stays valid after login.
const sessionTTL = 12 * time.Hour

// maxCookieLen bounds the work done on a cookie before its signature is checked.
const maxCookieLen = 1024

// minSessionKeyLen is the shortest accepted session key: shorter keys make the
// HMAC guessable.
const minSessionKeyLen = 16

// b64 is strict so that each signature has exactly one accepted spelling.
var b64 = base64.RawURLEncoding.Strict()

// signSession returns the cookie value for user valid until expires. The value
// is self-contained (user, expiry, HMAC-SHA256 over both) so that the other PM,
// which holds the same key, accepts it after a failover without shared state.
func signSession(key []byte, user string, expires time.Time) string {
	payload := b64.EncodeToString([]byte(user)) + "." + strconv.FormatInt(expires.Unix(), 10)
	return payload + "." + b64.EncodeToString(sessionMAC(key, payload))
}

func sessionMAC(key []byte, payload string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("dyad-session-v1\x00"))
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// parseSession checks a cookie value made by signSession and returns its user.
// It rejects malformed, tampered and expired values.
func parseSession(key []byte, value string, now time.Time) (string, error) {
	if len(value) > maxCookieLen {
		return "", errors.New("session cookie too long")
	}
	i := strings.LastIndexByte(value, '.')
	if i < 0 {
		return "", errors.New("malformed session cookie")
	}
	payload, sig := value[:i], value[i+1:]
	mac, err := b64.DecodeString(sig)
	if err != nil {
		return "", fmt.Errorf("malformed session signature: %w", err)
	}
	if !hmac.Equal(mac, sessionMAC(key, payload)) {
		return "", errors.New("bad session signature")
	}
	encUser, exp, ok := strings.Cut(payload, ".")
	if !ok {
		return "", errors.New("malformed session payload")
	}
	user, err := b64.DecodeString(encUser)
	if err != nil || len(user) == 0 {
		return "", errors.New("malformed session user")
	}
	expires, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return "", fmt.Errorf("malformed session expiry: %w", err)
	}
	if now.Unix() >= expires {
		return "", errors.New("session expired")
	}
	return string(user), nil
}
