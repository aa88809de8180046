package identity_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/skipreport"
	"golang.org/x/crypto/ssh"
)

// identityNames are the files of the default identity output (SPEC §4).
var identityNames = []string{"key", "key.pub", "key-cert.pub", "tls.key", "tls.crt", "ca.crt",
	"known_hosts", "ssh_config", "identity.json"}

// umask is the process's file creation mask, which lowers the modes WriteDir asks for.
func umask(t *testing.T) fs.FileMode {
	t.Helper()
	path := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(path, nil, 0o777); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return 0o777 &^ st.Mode().Perm()
}

// readDir returns every file of dir by name.
func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(data)
	}
	return out
}

// onlyEntry checks that parent holds nothing but name: no temporary or
// old directory of WriteDir is left behind.
func onlyEntry(t *testing.T, parent, name string) {
	t.Helper()
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{name}) {
		t.Errorf("%s holds %v, want only %s", parent, names, name)
	}
}

// sampleResponse is a join response for bot deployer with two host patterns.
func sampleResponse() (*identity.JoinResponse, *identity.OutputResponse) {
	out := identity.OutputResponse{
		Name:           "identity",
		Roles:          []string{"deploy", "audit-read"},
		Logins:         []string{"ubuntu", "ci", "deploy"},
		SSHCertificate: "ssh-ed25519-cert-v01@openssh.com AAAAcert deployer",
		TLSCertificate: "-----BEGIN CERTIFICATE-----\nTLS\n-----END CERTIFICATE-----\n",
		SSHSerial:      4211,
		TLSSerial:      "5e1c2a",
		NotBefore:      time.Date(2025, 6, 2, 10, 29, 0, 0, time.UTC),
		NotAfter:       time.Date(2025, 6, 2, 11, 30, 0, 0, time.UTC),
	}
	resp := &identity.JoinResponse{
		ClusterName:  "acme",
		Bot:          "deployer",
		JoinToken:    "github-deploy",
		Method:       "github",
		Outputs:      []identity.OutputResponse{out},
		TLSCA:        "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
		SSHHostCA:    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostCA host-ca\n",
		HostPatterns: []string{"*.acme.internal", "bastion.acme.net"},
	}
	return resp, &resp.Outputs[0]
}

// render lays out a real identity (fresh keys, sample certificates) for dir.
func render(t *testing.T, dir string) ([]identity.File, *identity.Keys) {
	t.Helper()
	keys, err := identity.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	resp, out := sampleResponse()
	files, err := identity.RenderIdentity(dir, keys, resp, out)
	if err != nil {
		t.Fatalf("RenderIdentity: %v", err)
	}
	return files, keys
}

func fileNamed(t *testing.T, files []identity.File, name string) identity.File {
	t.Helper()
	for _, f := range files {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no file %s among %d rendered", name, len(files))
	return identity.File{}
}

func TestWriteDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mbot")
	files, _ := render(t, dir)
	if err := identity.WriteDir(dir, files); err != nil {
		t.Fatalf("WriteDir: %v", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Errorf("%s has mode %v, want a directory with mode 0700", dir, st.Mode())
	}
	mask := umask(t)
	secret := map[string]bool{"key": true, "tls.key": true, "identity.json": true}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		if secret[f.Name] && f.Mode != 0o600 {
			t.Errorf("RenderIdentity gives %s mode %o, want 0600", f.Name, f.Mode)
		}
		if !secret[f.Name] && f.Mode != 0o644 {
			t.Errorf("RenderIdentity gives public file %s mode %o, want 0644", f.Name, f.Mode)
		}
		st, err := os.Stat(filepath.Join(dir, f.Name))
		if err != nil {
			t.Errorf("%s not written: %v", f.Name, err)
			continue
		}
		if want := f.Mode &^ mask; st.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", f.Name, st.Mode().Perm(), want)
		}
		data, _ := os.ReadFile(filepath.Join(dir, f.Name))
		if !bytes.Equal(data, f.Data) {
			t.Errorf("%s holds %q, want %q", f.Name, data, f.Data)
		}
	}
	slices.Sort(names)
	want := slices.Clone(identityNames)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("RenderIdentity wrote %v, want %v", names, want)
	}
	onlyEntry(t, filepath.Dir(dir), "mbot")
}

func TestWriteDirRelativePath(t *testing.T) {
	parent := t.TempDir()
	t.Chdir(parent)
	if err := identity.WriteDir(filepath.Join("out", "mbot"), []identity.File{{Name: "key", Data: []byte("k"), Mode: 0o600}}); err != nil {
		t.Fatalf("WriteDir: %v", err)
	}
	if got := readDir(t, filepath.Join(parent, "out", "mbot")); got["key"] != "k" {
		t.Errorf("relative --out: identity holds %v", got)
	}
}

func TestWriteDirReplaces(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "mbot")
	first, _ := render(t, dir)
	if err := identity.WriteDir(dir, first); err != nil {
		t.Fatalf("first WriteDir: %v", err)
	}
	// The second identity has fewer files: the ones it lacks must not survive.
	second := []identity.File{
		{Name: "key", Data: []byte("second key"), Mode: 0o600},
		{Name: "identity.json", Data: []byte(`{"bot":"second"}`), Mode: 0o600},
	}
	if err := identity.WriteDir(dir, second); err != nil {
		t.Fatalf("second WriteDir: %v", err)
	}
	got := readDir(t, dir)
	want := map[string]string{"key": "second key", "identity.json": `{"bot":"second"}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after replacing, %s holds %v, want %v", dir, got, want)
	}
	onlyEntry(t, parent, "mbot")
}

// TestWriteDirRefuses checks that WriteDir never replaces what mbot did not write.
func TestWriteDirRefuses(t *testing.T) {
	files := []identity.File{{Name: "key", Data: []byte("new"), Mode: 0o600}}
	t.Run("directory with a foreign file", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "home")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		before := map[string]string{"key": "old", "notes.txt": "my notes"}
		for name, data := range before {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		err := identity.WriteDir(dir, files)
		if err == nil {
			t.Fatal("WriteDir replaced a directory holding a file mbot did not write")
		}
		for _, want := range []string{dir, "notes.txt", "--out"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		if got := readDir(t, dir); !reflect.DeepEqual(got, before) {
			t.Errorf("the refused directory changed: %v, want %v", got, before)
		}
		onlyEntry(t, parent, "home")
	})
	t.Run("regular file", func(t *testing.T) {
		parent := t.TempDir()
		path := filepath.Join(parent, "mbot")
		if err := os.WriteFile(path, []byte("a file"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := identity.WriteDir(path, files)
		if err == nil {
			t.Fatal("WriteDir replaced a regular file")
		}
		if !strings.Contains(err.Error(), "not a directory") || !strings.Contains(err.Error(), "--out") {
			t.Errorf("error %q does not say the path is not a directory", err)
		}
		if data, _ := os.ReadFile(path); string(data) != "a file" {
			t.Errorf("the refused file now holds %q", data)
		}
		onlyEntry(t, parent, "mbot")
	})
}

// TestWriteDirFailureKeepsPrevious checks that a write failing half-way
// leaves the earlier identity as it was and no temporary directory behind.
func TestWriteDirFailureKeepsPrevious(t *testing.T) {
	tests := []struct {
		name  string
		files []identity.File
		want  string
	}{
		{"file in a missing subdirectory", []identity.File{
			{Name: "key", Data: []byte("new key"), Mode: 0o600},
			{Name: "sub/tls.key", Data: []byte("new tls key"), Mode: 0o600},
		}, "writing sub/tls.key"},
		{"same file twice", []identity.File{
			{Name: "key", Data: []byte("new key"), Mode: 0o600},
			{Name: "key", Data: []byte("other key"), Mode: 0o600},
		}, "writing key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "mbot")
			previous, _ := render(t, dir)
			if err := identity.WriteDir(dir, previous); err != nil {
				t.Fatal(err)
			}
			before := readDir(t, dir)
			err := identity.WriteDir(dir, tc.files)
			if err == nil {
				t.Fatal("WriteDir succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if got := readDir(t, dir); !reflect.DeepEqual(got, before) {
				t.Errorf("a failed WriteDir changed the earlier identity")
			}
			onlyEntry(t, parent, "mbot")
		})
	}
}

func TestWriteDirReadOnlyParent(t *testing.T) {
	if os.Geteuid() == 0 {
		skipreport.Skip(t, "root writes into read-only directories")
	}
	parent := t.TempDir()
	dir := filepath.Join(parent, "mbot")
	previous, _ := render(t, dir)
	if err := identity.WriteDir(dir, previous); err != nil {
		t.Fatal(err)
	}
	before := readDir(t, dir)
	if err := os.Chmod(parent, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(parent, 0o700) })
	if err := identity.WriteDir(dir, []identity.File{{Name: "key", Data: []byte("new"), Mode: 0o600}}); err == nil {
		t.Fatal("WriteDir into a read-only parent succeeded")
	}
	if got := readDir(t, dir); !reflect.DeepEqual(got, before) {
		t.Errorf("a failed WriteDir changed the earlier identity")
	}
	onlyEntry(t, parent, "mbot")
}

func TestRemoveStale(t *testing.T) {
	write := func(t *testing.T, dir string, names ...string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("identity only", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "mbot")
		write(t, dir, identityNames...)
		removed, err := identity.RemoveStale(dir)
		if err != nil || !removed {
			t.Fatalf("RemoveStale = %v, %v; want true, nil", removed, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("the emptied directory is still there (stat: %v)", err)
		}
	})
	t.Run("identity beside foreign files", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "mbot")
		write(t, dir, append([]string{"notes.txt", "key.bak"}, identityNames...)...)
		if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
		removed, err := identity.RemoveStale(dir)
		if err != nil || !removed {
			t.Fatalf("RemoveStale = %v, %v; want true, nil", removed, err)
		}
		got := readDirNames(t, dir)
		if want := []string{"key.bak", "notes.txt", "sub"}; !slices.Equal(got, want) {
			t.Errorf("after RemoveStale %s holds %v, want %v", dir, got, want)
		}
	})
	t.Run("partial identity", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "mbot")
		write(t, dir, "identity.json", "key", "tls.key")
		removed, err := identity.RemoveStale(dir)
		if err != nil || !removed {
			t.Fatalf("RemoveStale = %v, %v; want true, nil", removed, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("the emptied directory is still there (stat: %v)", err)
		}
	})
	t.Run("no identity.json", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "mbot")
		write(t, dir, "key", "tls.key", "ssh_config")
		removed, err := identity.RemoveStale(dir)
		if err != nil || removed {
			t.Fatalf("RemoveStale = %v, %v; want false, nil", removed, err)
		}
		if got, want := readDirNames(t, dir), []string{"key", "ssh_config", "tls.key"}; !slices.Equal(got, want) {
			t.Errorf("RemoveStale without identity.json touched %s: %v, want %v", dir, got, want)
		}
	})
	t.Run("no directory", func(t *testing.T) {
		removed, err := identity.RemoveStale(filepath.Join(t.TempDir(), "missing"))
		if err != nil || removed {
			t.Fatalf("RemoveStale = %v, %v; want false, nil", removed, err)
		}
	})
}

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// hostBlock is one Host block of an ssh_config: its options by keyword.
type hostBlock map[string]string

func parseSSHConfig(t *testing.T, text string) (patterns []string, blocks map[string]hostBlock) {
	t.Helper()
	blocks = map[string]hostBlock{}
	var cur hostBlock
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, " ")
		value = strings.Trim(strings.TrimSpace(value), `"`)
		if key == "Host" {
			if _, dup := blocks[value]; dup {
				t.Errorf("ssh_config has two Host %s blocks", value)
			}
			patterns = append(patterns, value)
			cur = hostBlock{}
			blocks[value] = cur
			continue
		}
		if cur == nil {
			t.Fatalf("ssh_config option %q outside a Host block", line)
		}
		cur[key] = value
	}
	return patterns, blocks
}

func TestRenderIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mbot")
	files, keys := render(t, dir)
	resp, out := sampleResponse()

	t.Run("ssh_config", func(t *testing.T) {
		text := string(fileNamed(t, files, "ssh_config").Data)
		patterns, blocks := parseSSHConfig(t, text)
		if !slices.Equal(patterns, resp.HostPatterns) {
			t.Fatalf("ssh_config has Host blocks %v, want one per pattern %v", patterns, resp.HostPatterns)
		}
		for _, p := range patterns {
			b := blocks[p]
			want := hostBlock{
				"User":                  "ubuntu",
				"IdentityFile":          filepath.Join(dir, "key"),
				"CertificateFile":       filepath.Join(dir, "key-cert.pub"),
				"UserKnownHostsFile":    filepath.Join(dir, "known_hosts"),
				"GlobalKnownHostsFile":  "/dev/null",
				"IdentitiesOnly":        "yes",
				"StrictHostKeyChecking": "yes",
			}
			for k, v := range want {
				if b[k] != v {
					t.Errorf("Host %s: %s = %q, want %q", p, k, b[k], v)
				}
			}
			for _, k := range []string{"IdentityFile", "CertificateFile", "UserKnownHostsFile"} {
				if !filepath.IsAbs(b[k]) {
					t.Errorf("Host %s: %s %q is not absolute", p, k, b[k])
				}
			}
		}
		if !strings.Contains(text, "2025-06-02T11:30:00Z") {
			t.Errorf("ssh_config does not say when the certificate expires:\n%s", text)
		}
	})

	t.Run("ssh_config read by OpenSSH", func(t *testing.T) {
		sshPath, err := exec.LookPath("ssh")
		if err != nil {
			skipreport.Skip(t, "no ssh client")
		}
		cfg := filepath.Join(t.TempDir(), "ssh_config")
		if err := os.WriteFile(cfg, fileNamed(t, files, "ssh_config").Data, 0o600); err != nil {
			t.Fatal(err)
		}
		outText, err := exec.Command(sshPath, "-G", "-F", cfg, "web1.acme.internal").CombinedOutput()
		if err != nil {
			t.Fatalf("ssh -G: %v\n%s", err, outText)
		}
		for _, want := range []string{
			"user ubuntu\n",
			"identityfile " + filepath.Join(dir, "key") + "\n",
			"certificatefile " + filepath.Join(dir, "key-cert.pub") + "\n",
			"userknownhostsfile " + filepath.Join(dir, "known_hosts") + "\n",
			"stricthostkeychecking true\n",
		} {
			if !strings.Contains(string(outText), want) {
				t.Errorf("ssh -G does not show %q", strings.TrimSpace(want))
			}
		}
	})

	t.Run("known_hosts", func(t *testing.T) {
		got := string(fileNamed(t, files, "known_hosts").Data)
		want := "@cert-authority *.acme.internal ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostCA host-ca\n" +
			"@cert-authority bastion.acme.net ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostCA host-ca\n"
		if got != want {
			t.Errorf("known_hosts =\n%s\nwant\n%s", got, want)
		}
	})

	t.Run("identity.json", func(t *testing.T) {
		var got identity.Summary
		if err := json.Unmarshal(fileNamed(t, files, "identity.json").Data, &got); err != nil {
			t.Fatalf("identity.json: %v", err)
		}
		want := identity.Summary{Cluster: "acme", Bot: "deployer", JoinToken: "github-deploy", Method: "github",
			Output: "identity", Roles: out.Roles, Logins: out.Logins, NotBefore: out.NotBefore, NotAfter: out.NotAfter}
		want.Serials.SSH, want.Serials.TLS = 4211, "5e1c2a"
		if !reflect.DeepEqual(got, want) {
			t.Errorf("identity.json = %+v, want %+v", got, want)
		}
	})

	t.Run("keys and certificates", func(t *testing.T) {
		raw, err := ssh.ParseRawPrivateKey(fileNamed(t, files, "key").Data)
		if err != nil {
			t.Fatalf("key: %v", err)
		}
		signer, err := ssh.NewSignerFromKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(ssh.MarshalAuthorizedKey(signer.PublicKey())); got != keys.SSHPublicKey() {
			t.Errorf("key holds another key than key.pub")
		}
		if got := string(fileNamed(t, files, "key.pub").Data); got != keys.SSHPublicKey() {
			t.Errorf("key.pub = %q, want %q", got, keys.SSHPublicKey())
		}
		if got := string(fileNamed(t, files, "key-cert.pub").Data); got != out.SSHCertificate+"\n" {
			t.Errorf("key-cert.pub = %q, want the certificate and a newline", got)
		}
		if got := string(fileNamed(t, files, "tls.crt").Data); got != out.TLSCertificate {
			t.Errorf("tls.crt = %q, want %q", got, out.TLSCertificate)
		}
		if got := string(fileNamed(t, files, "ca.crt").Data); got != resp.TLSCA {
			t.Errorf("ca.crt = %q, want %q", got, resp.TLSCA)
		}
	})
}

func TestSSHConfigWithoutLogins(t *testing.T) {
	text, err := identity.SSHConfig("/run/mbot", []string{"*.acme.internal"}, nil, `bot "deployer"`, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text, "User ") {
		t.Errorf("ssh_config names a User though the identity has no logins:\n%s", text)
	}
	if !strings.Contains(text, `IdentityFile "/run/mbot/key"`) {
		t.Errorf("ssh_config lacks the IdentityFile:\n%s", text)
	}
}
