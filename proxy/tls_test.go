package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// common name to certFile and keyFile.
func writeCert(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestHTTP2OverTLSAndCertReload(t *testing.T) {
	_, be := echoBackend(t, "a")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	writeCert(t, certFile, keyFile, "first")
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0", tls: {cert_file: %q, key_file: %q, reload_interval: 1h}}]
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app}]
`, certFile, keyFile, be)
	p, base := startProxy(t, cfg, Options{})
	client := func() *http.Client {
		return &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
		}}
	}
	resp, e := getEcho(t, client(), mustReq(t, "GET", base+"/h2", nil))
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("client protocol %s, want HTTP/2.0", resp.Proto)
	}
	if e.Proto != "HTTP/1.1" || e.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("backend saw %s, X-Forwarded-Proto %q", e.Proto, e.Header.Get("X-Forwarded-Proto"))
	}
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "first" {
		t.Errorf("certificate %q, want first", cn)
	}

	// Replace the files; the watcher (driven here directly) swaps the cert.
	writeCert(t, certFile, keyFile, "second")
	p.mu.Lock()
	cs := p.listeners["web"].certs
	p.mu.Unlock()
	cs.refresh()
	resp, _ = getEcho(t, client(), mustReq(t, "GET", base+"/h2", nil))
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Errorf("after reload certificate %q, want second", cn)
	}
	// A broken file keeps the old certificate.
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	cs.refresh()
	resp, _ = getEcho(t, client(), mustReq(t, "GET", base+"/h2", nil))
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Errorf("after bad files certificate %q, want second kept", cn)
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	_, be := echoBackend(t, "a")
	cfg := fmt.Sprintf(`
listeners: [{name: web, address: "127.0.0.1:0", h2c: true}]
pools: [{name: app, backends: [{address: %q}]}]
routes: [{name: all, pool: app}]
`, be)
	_, base := startProxy(t, cfg, Options{})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protos}}
	resp, e := getEcho(t, c, mustReq(t, "GET", base+"/", nil))
	if resp.Proto != "HTTP/2.0" || e.Name != "a" {
		t.Errorf("h2c: client %s, backend %q", resp.Proto, e.Name)
	}
	// HTTP/1.1 still works on the same port.
	resp, _ = getEcho(t, nil, mustReq(t, "GET", base+"/", nil))
	if resp.Proto != "HTTP/1.1" {
		t.Errorf("http/1.1 on h2c listener: %s", resp.Proto)
	}
}
