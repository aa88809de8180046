package demo

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// echoServer is an mTLS server on loopback that requires a client
// certificate signed by the authority's TLS CA and answers each connection
// with what it saw of the client.
type echoServer struct {
	Addr string
	ln   net.Listener
	wg   sync.WaitGroup
}

// startEcho serves with a certificate for demoHost from the TLS CA (as mbot
// sign --host issues one) and trusts the same CA for client certificates.
func startEcho(files []identity.File, caPEM []byte) (*echoServer, error) {
	data := map[string][]byte{}
	for _, f := range files {
		data[f.Name] = f.Data
	}
	cert, err := tls.X509KeyPair(data[identity.FileTLSCert], data[identity.FileTLSKey])
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("the authority's TLS CA is not PEM")
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
	if err != nil {
		return nil, err
	}
	s := &echoServer{Addr: ln.Addr().String(), ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(c.(*tls.Conn)) }()
		}
	}()
	return s, nil
}

func (s *echoServer) serve(c *tls.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		return
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	uris := make([]string, len(leaf.URIs))
	for i, u := range leaf.URIs {
		uris[i] = u.String()
	}
	if len(uris) == 0 {
		uris = []string{"none"}
	}
	fmt.Fprintf(c, "verified client certificate: subject %q, URI SANs %s, issued by %q, expires %s\n",
		leaf.Subject.String(), strings.Join(uris, " "), leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
}

// Close stops the server and waits for its connections.
func (s *echoServer) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// dialEcho connects to the echo server with the identity in dir (tls.crt,
// tls.key, trusting ca.crt for the server) and returns the server's answer.
func dialEcho(dir, addr string) (string, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, identity.FileTLSCert), filepath.Join(dir, identity.FileTLSKey))
	if err != nil {
		return "", err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, identity.FileCA))
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return "", fmt.Errorf("%s holds no certificate", identity.FileCA)
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: demoHost, MinVersion: tls.VersionTLS13}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}
