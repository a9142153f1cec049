// Package unitca is the unit's certificate authority. The CA key is derived
// from the unit secret, so both PMs hold the same CA without a key exchange,
// and each agent issues itself a fresh leaf certificate at start. PM-to-PM
// traffic uses mutual TLS with these certificates.
package unitca

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// CA is the unit's certificate authority.
type CA struct {
	key  ed25519.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

// derive returns a purpose-specific key from the unit secret.
func derive(secret []byte, purpose string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// HeartbeatKey is the key that authenticates heartbeats.
func HeartbeatKey(secret []byte) []byte { return derive(secret, "dyad heartbeat v1") }

// ProbeKey is the key that authenticates shared-network probe frames.
func ProbeKey(secret []byte) []byte { return derive(secret, "dyad probe v1") }

// SessionKey is the key that signs console sessions.
func SessionKey(secret []byte) []byte { return derive(secret, "dyad console session v1") }

// QuorumKey is the key that authenticates the unit's quorum lease requests
// and replies. The quorum server, outside the unit, holds this key instead of
// the unit secret, so it can derive no other key of the unit.
func QuorumKey(secret []byte) []byte { return derive(secret, "dyad quorum v1") }

// New derives the unit CA from the unit secret. The same secret always gives
// the same CA certificate.
func New(secret []byte) (*CA, error) {
	if len(secret) < 32 {
		return nil, errors.New("unit secret shorter than 32 bytes")
	}
	key := ed25519.NewKeyFromSeed(derive(secret, "dyad unit ca v1"))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Dyad unit CA"},
		NotBefore:             time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2124, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create unit CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{key: key, cert: cert, pool: pool}, nil
}

// PMName is the name in the certificate of PM n.
func PMName(n int) string { return fmt.Sprintf("pm%d.dyad", n) }

// Leaf issues a certificate for PM node, valid for client and server use.
func (ca *CA) Leaf(node int) (tls.Certificate, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: PMName(node)},
		DNSNames:     []string{PMName(node)},
		// PM clocks may disagree until time sync exists; be generous.
		NotBefore:   now.Add(-48 * time.Hour),
		NotAfter:    now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue certificate for pm%d: %w", node, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// ServerConfig is the TLS configuration of a PM's peer server: it accepts
// only clients holding a certificate of this unit.
func (ca *CA) ServerConfig(leaf tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{leaf},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
	}
}

// ClientConfig is the TLS configuration to reach PM peer.
func (ca *CA) ClientConfig(leaf tls.Certificate, peer int) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{leaf},
		RootCAs:      ca.pool,
		ServerName:   PMName(peer),
	}
}
