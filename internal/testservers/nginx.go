//go:build linux

package testservers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// NginxConfig is what a test starts nginx with.
type NginxConfig struct {
	// ServerCert, ServerKey and ClientCA are PEM: ssl_certificate,
	// ssl_certificate_key and ssl_client_certificate (the CA, or SPIFFE
	// trust bundle, that client certificates must chain to).
	ServerCert, ServerKey, ClientCA []byte
	// CRL is PEM CRLs for ssl_crl (nginx then checks every client
	// certificate's chain against them); none when empty. Reload reads
	// ssl/client.crl again.
	CRL []byte
	// VerifyClient is ssl_verify_client: "on" unless set ("optional"
	// lets a handler see $ssl_client_verify).
	VerifyClient string
	// Server is more directives for the server block, e.g. a location.
	// Empty: every request gets 200 and "subject=$ssl_client_s_dn
	// verify=$ssl_client_verify" on one line.
	Server string
}

// Nginx is a running nginx serving HTTPS on 127.0.0.1:Port.
type Nginx struct {
	Port int
	URL  string // https://127.0.0.1:<Port>
	// Prefix is nginx's directory: nginx.conf, ssl/, logs/.
	Prefix string
	// Conf is the whole nginx.conf, to log when a test fails.
	Conf string

	bin, conf string
	proc      *process
}

// StartNginx starts nginx in the foreground (daemon off) in a fresh prefix
// directory with one TLS server block on a free loopback port, and stops it
// when the test ends.
func StartNginx(t testing.TB, cfg NginxConfig) *Nginx {
	t.Helper()
	nginx := require(t, "nginx", "nginx", "/usr/sbin/nginx")
	prefix := t.TempDir()
	n := &Nginx{Port: freePort(t), Prefix: prefix}
	n.URL = "https://127.0.0.1:" + strconv.Itoa(n.Port)
	ssl := filepath.Join(prefix, "ssl")
	for _, d := range []string{ssl, filepath.Join(prefix, "logs"), filepath.Join(prefix, "tmp")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// nginx reads the certificates as the master (the test's user); workers
	// need none of the files.
	files := map[string][]byte{"server.crt": cfg.ServerCert, "server.key": cfg.ServerKey, "client_ca.crt": cfg.ClientCA}
	crl := ""
	if len(cfg.CRL) > 0 {
		files["client.crl"] = cfg.CRL
		crl = "ssl_crl " + filepath.Join(ssl, "client.crl") + ";"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ssl, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	verify := cfg.VerifyClient
	if verify == "" {
		verify = "on"
	}
	server := cfg.Server
	if server == "" {
		server = `location / {
            default_type text/plain;
            return 200 "subject=$ssl_client_s_dn verify=$ssl_client_verify\n";
        }`
	}
	tmp := filepath.Join(prefix, "tmp")
	n.Conf = fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr info;
events {
    worker_connections 64;
}
http {
    access_log %[1]s/logs/access.log;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    server {
        listen 127.0.0.1:%[3]d ssl;
        server_name localhost;
        ssl_certificate %[4]s/server.crt;
        ssl_certificate_key %[4]s/server.key;
        ssl_client_certificate %[4]s/client_ca.crt;
        ssl_verify_client %[5]s;
        %[7]s
        %[6]s
    }
}
`, prefix, tmp, n.Port, ssl, verify, server, crl)
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(n.Conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// -e: before it reads nginx.conf, nginx opens its compiled-in error log
	// (/var/log/nginx), which a test's user may not be able to write.
	n.bin, n.conf = nginx, conf
	n.proc = startProcess(t, "nginx", exec.Command(nginx, "-p", prefix+"/", "-c", conf, "-e", "stderr"), syscall.SIGTERM)
	n.proc.waitUntil(t, listening("127.0.0.1:"+strconv.Itoa(n.Port)))
	return n
}

// Reload writes crl as ssl/client.crl and runs nginx -s reload, as an
// operator does after fetching a new CRL, then waits until a new worker
// has taken over (nginx logs "gracefully shutting down" for the old one):
// connections after Reload returns are checked against crl.
func (n *Nginx) Reload(t testing.TB, crl []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(n.Prefix, "ssl", "client.crl"), crl, 0o600); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(n.proc.logs.String(), "gracefully shutting down")
	if out, err := exec.Command(n.bin, "-p", n.Prefix+"/", "-c", n.conf, "-e", "stderr", "-s", "reload").CombinedOutput(); err != nil {
		t.Fatalf("nginx -s reload: %v\n%s", err, out)
	}
	n.proc.waitUntil(t, func(context.Context) error {
		if strings.Count(n.proc.logs.String(), "gracefully shutting down") > before {
			return nil
		}
		return errors.New("the old worker has not shut down yet")
	})
}

// Logs is what nginx wrote to its error log (stderr).
func (n *Nginx) Logs() string { return n.proc.logs.String() }

// Curl runs curl as a test's user would, with PATH, an empty HOME and args
// (e.g. --cert svid.pem --key svid_key.pem --cacert bundle.pem n.URL),
// adding --silent --show-error. It returns the response body, and an error
// with curl's message when curl exits non-zero (a refused handshake).
func (n *Nginx) Curl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	curl := require(t, "curl", "curl", "/usr/bin/curl")
	return runClient(t, nil, "", curl, append([]string{"--silent", "--show-error", "--max-time", "30"}, args...)...)
}
