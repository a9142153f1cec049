package unitca

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestMutualTLS(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	ca1, err := New(secret)
	if err != nil {
		t.Fatal(err)
	}
	ca2, _ := New(secret) // the other PM derives the same CA
	if !bytes.Equal(ca1.cert.Raw, ca2.cert.Raw) {
		t.Fatal("same secret gave different CA certificates")
	}
	other, _ := New(bytes.Repeat([]byte{8}, 32))

	srvLeaf, _ := ca1.Leaf(1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = ca1.ServerConfig(srvLeaf)
	srv.StartTLS()
	defer srv.Close()

	get := func(cfg *tls.Config) (string, error) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	leaf2, _ := ca2.Leaf(2)
	if got, err := get(ca2.ClientConfig(leaf2, 1)); err != nil || got != "pm2.dyad" {
		t.Fatalf("same unit: %q, %v", got, err)
	}
	strangerLeaf, _ := other.Leaf(2)
	if _, err := get(other.ClientConfig(strangerLeaf, 1)); err == nil {
		t.Fatal("a PM of another unit was accepted")
	}
	if _, err := get(ca2.ClientConfig(leaf2, 2)); err == nil {
		t.Fatal("server certificate for pm1 accepted as pm2")
	}
	if _, err := New([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
}
