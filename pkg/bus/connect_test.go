package bus_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// writeCert writes a certificate for 127.0.0.1 signed by parent (self-signed when parent is nil)
// and its key, and returns them for signing others.
func writeCert(t *testing.T, dir, name string, ca bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: ca, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	_ = os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TestConnectOverMutualTLS: with the CA and a client certificate (nats.tls), sluice connects
// to a server that requires TLS and verifies clients; without the CA it does not.
func TestConnectOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", true, nil, nil)
	writeCert(t, dir, "server", false, ca, caKey)
	writeCert(t, dir, "client", false, ca, caKey)
	conf := fmt.Sprintf("listen: \"127.0.0.1:-1\"\ntls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n}\n",
		filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca.pem"))
	ns := testkit.NATSFromConfig(t, dir, conf)
	url := strings.Replace(ns.ClientURL(), "nats://", "tls://", 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	auth := bus.Auth{TLSCA: filepath.Join(dir, "ca.pem"), TLSCert: filepath.Join(dir, "client.pem"), TLSKey: filepath.Join(dir, "client-key.pem")}
	c, err := bus.Connect(url, bus.ConnectOptions{Name: "t", Who: "fetcher", Auth: auth}, log)
	if err != nil {
		t.Fatalf("connect over mutual TLS: %v", err)
	}
	if _, err := c.NC.TLSConnectionState(); err != nil {
		t.Errorf("no TLS connection state: %v", err)
	}
	c.NC.Close()
	if _, err := bus.Connect(url, bus.ConnectOptions{Name: "t", Who: "fetcher", Auth: bus.Auth{TLSCA: auth.TLSCA}}, log); err == nil {
		t.Error("connected without the client certificate the server requires")
	}
	if _, err := bus.Connect(url, bus.ConnectOptions{Name: "t", Who: "fetcher", Auth: bus.Auth{TLSCert: auth.TLSCert, TLSKey: auth.TLSKey}}, log); err == nil {
		t.Error("connected without trusting the server's CA")
	}
}

// TestConnectWithNKey: a user nkey seed (nats.nkey) authenticates; another seed is refused in
// one line naming the key's public half, never the seed.
func TestConnectWithNKey(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherPub, _ := other.PublicKey()
	dir := t.TempDir()
	ns := testkit.NATSFromConfig(t, dir, fmt.Sprintf("listen: \"127.0.0.1:-1\"\nauthorization {\n  users = [ { nkey: %s } ]\n}\n", pub))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := bus.Connect(ns.ClientURL(), bus.ConnectOptions{Name: "t", Who: "fetcher", Auth: bus.Auth{NKeySeed: string(seed)}}, log)
	if err != nil {
		t.Fatalf("connect with the nkey: %v", err)
	}
	c.NC.Close()
	_, err = bus.Connect(ns.ClientURL(), bus.ConnectOptions{Name: "t", Who: "fetcher", Auth: bus.Auth{NKeySeed: string(otherSeed)}}, log)
	if err == nil || !strings.Contains(err.Error(), "fetcher: nats user "+otherPub) || !strings.Contains(err.Error(), "authorization violation") {
		t.Fatalf("error %v", err)
	}
	if strings.Contains(err.Error(), string(otherSeed)) {
		t.Fatal("the error shows the seed")
	}
}

// TestConnectWithCreds: a creds file's content (nats.creds: file:...) authenticates a JWT user
// of an operator-mode server; a user the account does not know is refused.
func TestConnectWithCreds(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	creds := func(signer nkeys.KeyPair) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		uc.Name = "fetcher"
		uc.IssuerAccount = apub
		ujwt, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	dir := t.TempDir()
	conf := fmt.Sprintf("listen: \"127.0.0.1:-1\"\noperator: %q\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n}\n", ojwt, apub, ajwt)
	ns := testkit.NATSFromConfig(t, dir, conf)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := bus.Connect(ns.ClientURL(), bus.ConnectOptions{Name: "t", Who: "fetcher", Auth: bus.Auth{Creds: creds(akp)}}, log)
	if err != nil {
		t.Fatalf("connect with creds: %v", err)
	}
	c.NC.Close()
	stranger, _ := nkeys.CreateAccount() // signs a user the server's account does not vouch for
	if _, err := bus.Connect(ns.ClientURL(), bus.ConnectOptions{Name: "t", Who: "fetcher", Auth: bus.Auth{Creds: creds(stranger)}}, log); err == nil ||
		!strings.Contains(err.Error(), "authorization violation") {
		t.Fatalf("a user of another account: %v", err)
	}
}
