package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/cispec"
	"github.com/mbot-dev/mbot/internal/skipreport"
	"gopkg.in/yaml.v3"
)

// The tests in this file run the GitHub Action (action.yml and its scripts),
// the GitLab CI/CD component (templates/mbot-issue.yml) and the CircleCI orb
// (orb/src) the way their platforms do, with the platform's job environment
// simulated, against a started authority. Downloads come from a loopback
// server that serves a release laid out like a goreleaser release.

// releaseVersion is the version of the simulated release.
const releaseVersion = "0.9.0"

// repoRoot is the repository, where action.yml, templates/ and orb/ live.
func repoRoot(t *testing.T) string {
	t.Helper()
	return absPath(t, "..")
}

// requireCommands finds the tools the platforms' scripts use (every hosted
// runner has them); a missing one skips the test here and fails it in CI.
func requireCommands(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			msg := fmt.Sprintf("%s is not installed; the CI integration scripts need it", name)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			skipreport.Skip(t, msg)
		}
	}
}

// pathWithoutMbot is PATH less the directories that hold an mbot, so that the
// scripts take their download path.
func pathWithoutMbot() string {
	var keep []string
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if st, err := os.Stat(filepath.Join(dir, "mbot")); err == nil && !st.IsDir() {
			continue
		}
		keep = append(keep, dir)
	}
	return strings.Join(keep, string(os.PathListSeparator))
}

// pathWithMbot is PATH with the binary under test first.
func pathWithMbot(bin string) string {
	return filepath.Dir(bin) + string(os.PathListSeparator) + pathWithoutMbot()
}

var (
	releasedOnce sync.Once
	releasedBin  string
	releasedErr  error
)

// releasedMbot is mbot built as the release build does, with version,
// commit and date set by -ldflags (.goreleaser.yaml).
func releasedMbot(t *testing.T) string {
	t.Helper()
	releasedOnce.Do(func() {
		dir := filepath.Join(filepath.Dir(mbotBin), "v"+releaseVersion)
		releasedBin = filepath.Join(dir, "mbot")
		ldflags := strings.Join([]string{
			"-X github.com/mbot-dev/mbot/commands.version=" + releaseVersion,
			"-X github.com/mbot-dev/mbot/commands.commit=abc1234",
			"-X github.com/mbot-dev/mbot/commands.date=2026-11-01T00:00:00Z",
		}, " ")
		out, err := exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-ldflags", ldflags, "-o", releasedBin, "github.com/mbot-dev/mbot").CombinedOutput()
		if err != nil {
			releasedErr = fmt.Errorf("building mbot %s: %v\n%s", releaseVersion, err, out)
		}
	})
	if releasedErr != nil {
		t.Fatal(releasedErr)
	}
	return releasedBin
}

// release is a loopback server laid out like https://github.com/OWNER/REPO/releases.
type release struct {
	url   string
	asset string // the archive for this machine
	mu    sync.Mutex
	got   []string // paths requested
}

func (r *release) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// startRelease serves release v0.9.0: the goreleaser archive for this
// machine (mbot_0.9.0_<os>_<arch>.tar.gz holding mbot and README.md), and
// checksums.txt, which lists other archives as well. With tampered, the
// archive served is not the one checksums.txt lists.
func startRelease(t *testing.T, tampered bool) *release {
	t.Helper()
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		skipreport.Skipf(t, "no simulated release for %s", runtime.GOOS)
	}
	bin := readFile(t, releasedMbot(t))
	r := &release{asset: fmt.Sprintf("mbot_%s_%s_%s.tar.gz", releaseVersion, runtime.GOOS, runtime.GOARCH)}
	archive := tarGz(t, map[string]string{"mbot": bin, "README.md": "# mbot\n"})
	sum := sha256.Sum256(archive)
	var checksums strings.Builder
	others := map[string]string{}
	for _, other := range []string{"darwin_arm64.tar.gz", "linux_arm64.tar.gz", "linux_amd64.tar.gz", "windows_amd64.zip"} {
		name := "mbot_" + releaseVersion + "_" + other
		if name != r.asset {
			others[name] = fmt.Sprintf("%x", sha256.Sum256([]byte(name)))
		}
	}
	others[r.asset] = hex.EncodeToString(sum[:])
	for _, name := range slices.Sorted(maps.Keys(others)) {
		fmt.Fprintf(&checksums, "%s  %s\n", others[name], name)
	}
	if tampered {
		archive = tarGz(t, map[string]string{"mbot": "#!/bin/sh\necho pwned\n", "README.md": "# mbot\n"})
	}
	files := map[string][]byte{r.asset: archive, "checksums.txt": []byte(checksums.String())}
	tag := "v" + releaseVersion

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.got = append(r.got, req.URL.Path)
		r.mu.Unlock()
		switch p := req.URL.Path; {
		case p == "/latest":
			http.Redirect(w, req, "/tag/"+tag, http.StatusFound)
		case p == "/tag/"+tag:
			fmt.Fprintf(w, "<html>release %s</html>", tag)
		case strings.HasPrefix(p, "/latest/download/"):
			http.Redirect(w, req, "/download/"+tag+"/"+strings.TrimPrefix(p, "/latest/download/"), http.StatusFound)
		case strings.HasPrefix(p, "/download/"+tag+"/"):
			data, ok := files[strings.TrimPrefix(p, "/download/"+tag+"/")]
			if !ok {
				http.NotFound(w, req)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(data)
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// startNoRelease serves a releases page of a repository that has no
// release yet, as GitHub does before the first tag: .../latest leads to the
// list of releases, every download and tag page is 404.
func startNoRelease(t *testing.T) *release {
	t.Helper()
	r := &release{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.got = append(r.got, req.URL.Path)
		r.mu.Unlock()
		switch req.URL.Path {
		case "/latest":
			http.Redirect(w, req, "/", http.StatusFound)
		case "/":
			fmt.Fprint(w, "<html>There aren't any releases here</html>")
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// copyOfMbot copies the mbot under test to a directory off PATH under a
// name of its own, as a binary built in an earlier step would be.
func copyOfMbot(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "build", "mbot-from-checkout")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, bin, readFile(t, mbotBin), 0o755)
	return bin
}

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		mode := int64(0o644)
		if name == "mbot" {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(files[name])), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ---- GitHub Actions ----

// runnerArch is RUNNER_ARCH for this machine.
func runnerArch(t *testing.T) string {
	switch runtime.GOARCH {
	case "amd64":
		return "X64"
	case "arm64":
		return "ARM64"
	}
	skipreport.Skipf(t, "GitHub has no runner for %s", runtime.GOARCH)
	return ""
}

// actionYAML is the part of action.yml the runner reads.
type actionYAML struct {
	Inputs map[string]struct {
		Default  string `yaml:"default"`
		Required bool   `yaml:"required"`
	} `yaml:"inputs"`
	Outputs map[string]struct {
		Value string `yaml:"value"`
	} `yaml:"outputs"`
	Runs struct {
		Using string `yaml:"using"`
		Steps []struct {
			ID    string            `yaml:"id"`
			Shell string            `yaml:"shell"`
			Env   map[string]string `yaml:"env"`
			Run   string            `yaml:"run"`
		} `yaml:"steps"`
	} `yaml:"runs"`
}

// ghRunner is one job on a simulated GitHub-hosted runner: the runner's
// files (RUNNER_TEMP, GITHUB_ENV, GITHUB_PATH) and the job's environment.
type ghRunner struct {
	temp, home, githubEnv, githubPath string
	vars                              map[string]string // the job's environment
}

func newGitHubRunner(t *testing.T, c *cluster) *ghRunner {
	t.Helper()
	dir := t.TempDir()
	r := &ghRunner{
		temp:       filepath.Join(dir, "_temp"),
		home:       t.TempDir(),
		githubEnv:  filepath.Join(dir, "github_env"),
		githubPath: filepath.Join(dir, "github_path"),
	}
	if err := os.Mkdir(r.temp, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{r.githubEnv, r.githubPath} {
		writeFile(t, f, "", 0o644)
	}
	r.vars = c.ci.GitHubEnv()
	maps.Copy(r.vars, map[string]string{
		"CI":          "true",
		"RUNNER_OS":   map[string]string{"linux": "Linux", "darwin": "macOS"}[runtime.GOOS],
		"RUNNER_ARCH": runnerArch(t),
		"RUNNER_TEMP": r.temp,
		"GITHUB_ENV":  r.githubEnv,
		"GITHUB_PATH": r.githubPath,
	})
	return r
}

// actionRun is what one use of the action did.
type actionRun struct {
	steps   map[string]result            // by step id
	outputs map[string]map[string]string // step outputs by step id
	action  map[string]string            // the action's outputs
	failed  string                       // id of the step that failed
}

var ghExpr = regexp.MustCompile(`\$\{\{\s*([^}]*?)\s*\}\}`)

// runAction runs the composite action in action.yml as the runner does:
// each step's env with ${{ inputs.* }} and ${{ steps.*.outputs.* }}
// evaluated, its run script in bash with GITHUB_ACTION_PATH set and a
// GITHUB_OUTPUT file of its own, GITHUB_PATH applied to the later steps;
// it stops at the first step that fails. path is the job's PATH.
func (r *ghRunner) runAction(t *testing.T, inputs map[string]string, path string, extra map[string]string) actionRun {
	t.Helper()
	root := repoRoot(t)
	var action actionYAML
	if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join(root, "action.yml"))), &action); err != nil {
		t.Fatal(err)
	}
	if action.Runs.Using != "composite" {
		t.Fatalf("action.yml runs.using is %q, want composite", action.Runs.Using)
	}
	values := map[string]string{}
	for name, in := range action.Inputs {
		values[name] = in.Default
	}
	for name, v := range inputs {
		if _, ok := action.Inputs[name]; !ok {
			t.Fatalf("action.yml has no input %q", name)
		}
		values[name] = v
	}
	ar := actionRun{steps: map[string]result{}, outputs: map[string]map[string]string{}, action: map[string]string{}}
	eval := func(s string) string {
		return ghExpr.ReplaceAllStringFunc(s, func(expr string) string {
			parts := strings.Split(ghExpr.FindStringSubmatch(expr)[1], ".")
			switch {
			case len(parts) == 2 && parts[0] == "inputs":
				if _, ok := action.Inputs[parts[1]]; !ok {
					t.Errorf("action.yml uses undeclared input %s", parts[1])
				}
				return values[parts[1]]
			case len(parts) == 4 && parts[0] == "steps" && parts[2] == "outputs":
				return ar.outputs[parts[1]][parts[3]]
			}
			t.Fatalf("action.yml: expression %s is not simulated here", expr)
			return ""
		})
	}
	for _, step := range action.Runs.Steps {
		if step.Shell != "bash" {
			t.Fatalf("step %s: shell %q, want bash (the scripts are bash on every runner OS)", step.ID, step.Shell)
		}
		vars := maps.Clone(r.vars)
		maps.Copy(vars, extra)
		for k, v := range step.Env {
			vars[k] = eval(v)
		}
		stepPath := path
		for _, dir := range strings.Fields(readFile(t, r.githubPath)) {
			stepPath = dir + string(os.PathListSeparator) + stepPath
		}
		outFile := filepath.Join(t.TempDir(), "github_output")
		writeFile(t, outFile, "", 0o644)
		vars["GITHUB_OUTPUT"] = outFile
		vars["GITHUB_ACTION_PATH"] = root
		vars["PATH"] = stepPath
		vars["HOME"] = r.home
		// The runner's bash: bash --noprofile --norc -eo pipefail {0}
		res := run(t, withVars(nil, vars), "bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", eval(step.Run))
		ar.steps[step.ID] = res
		ar.outputs[step.ID] = parseOutputs(t, readFile(t, outFile))
		if res.code != 0 {
			ar.failed = step.ID
			return ar
		}
	}
	for name, out := range action.Outputs {
		ar.action[name] = eval(out.Value)
	}
	return ar
}

// parseOutputs reads a GITHUB_OUTPUT file of name=value lines.
func parseOutputs(t *testing.T, data string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(data, "\n"), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.Contains(k, "<<") {
			t.Fatalf("GITHUB_OUTPUT line %q is not name=value", line)
		}
		out[k] = v
	}
	return out
}

// TestGitHubAction runs action.yml's steps (action/install.sh, then
// action/issue.sh) in a simulated GitHub Actions job against a started
// authority: with the mbot on PATH, with a download of the latest release,
// and refusing a download whose checksum does not match.
func TestGitHubAction(t *testing.T) {
	requireCommands(t, "bash", "curl", "tar", "gzip", "sha256sum", "awk", "sed")
	c := startCluster(t)
	inputs := map[string]string{"authority": c.url, "ca-pin": c.pin, "token": tokenGitHub}

	checkOutputs := func(t *testing.T, r *ghRunner, ar actionRun, dir string) {
		t.Helper()
		for name, want := range map[string]string{
			"destination-dir":  dir,
			"ssh-config":       filepath.Join(dir, "ssh_config"),
			"identity-file":    filepath.Join(dir, "key"),
			"certificate-file": filepath.Join(dir, "key-cert.pub"),
			"known-hosts":      filepath.Join(dir, "known_hosts"),
			"tls-cert":         filepath.Join(dir, "tls.crt"),
			"tls-key":          filepath.Join(dir, "tls.key"),
			"ca-file":          filepath.Join(dir, "ca.crt"),
		} {
			if got := ar.action[name]; got != want {
				t.Errorf("action output %s = %q, want %q", name, got, want)
			}
		}
		if stdout := ar.steps["issue"].stdout; !strings.HasPrefix(stdout, "::add-mask::") {
			t.Errorf("the issue step did not mask the OIDC token; stdout:\n%s", stdout)
		}
	}

	t.Run("mbot-on-path", func(t *testing.T) {
		r := newGitHubRunner(t, c)
		in := maps.Clone(inputs)
		in["version"] = "path"
		in["ttl"] = "2h"
		in["roles"] = roleName
		ar := r.runAction(t, in, pathWithMbot(mbotBin), nil)
		if ar.failed != "" {
			t.Fatalf("step %s failed: %s", ar.failed, ar.steps[ar.failed])
		}
		if got := ar.outputs["install"]["mbot"]; got != mbotBin {
			t.Errorf("install used %q, want the mbot on PATH %s", got, mbotBin)
		}
		if data := readFile(t, r.githubPath); data != "" {
			t.Errorf("install added %q to GITHUB_PATH, though mbot was on PATH", data)
		}
		dir := filepath.Join(r.temp, "mbot") // the default out
		checkOutputs(t, r, ar, dir)
		sum := checkIdentity(t, c, dir, tokenGitHub, "github")
		if d := time.Until(sum.NotAfter); d > 2*time.Hour+time.Minute || d < 2*time.Hour-5*time.Minute {
			t.Errorf("ttl: 2h gave an identity valid for %s", d.Round(time.Second))
		}
		if got, want := readFile(t, r.githubEnv), "MBOT_IDENTITY_DIR="+dir+"\n"; got != want {
			t.Errorf("GITHUB_ENV = %q, want %q", got, want)
		}
	})

	t.Run("download-latest", func(t *testing.T) {
		rel := startRelease(t, false)
		r := newGitHubRunner(t, c)
		in := maps.Clone(inputs)
		in["out"] = filepath.Join(t.TempDir(), "identity")
		in["export-env"] = "false"
		ar := r.runAction(t, in, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if ar.failed != "" {
			t.Fatalf("step %s failed: %s", ar.failed, ar.steps[ar.failed])
		}
		installDir := filepath.Join(r.temp, "mbot-"+releaseVersion)
		if got := ar.outputs["install"]["mbot"]; got != filepath.Join(installDir, "mbot") {
			t.Errorf("install output mbot = %q, want %s", got, filepath.Join(installDir, "mbot"))
		}
		if got := ar.action["version"]; got != releaseVersion {
			t.Errorf("action output version = %q, want %s", got, releaseVersion)
		}
		if got := readFile(t, r.githubPath); got != installDir+"\n" {
			t.Errorf("GITHUB_PATH = %q, want %q", got, installDir+"\n")
		}
		if !strings.Contains(ar.steps["install"].stderr, "matches checksums.txt") {
			t.Errorf("install did not report the checksum check:\n%s", ar.steps["install"])
		}
		wantPaths := []string{"/latest", "/tag/v" + releaseVersion, "/download/v" + releaseVersion + "/" + rel.asset, "/download/v" + releaseVersion + "/checksums.txt"}
		if got := rel.requests(); !slices.Equal(got, wantPaths) {
			t.Errorf("requests to the release server: %v, want %v", got, wantPaths)
		}
		checkOutputs(t, r, ar, in["out"])
		checkIdentity(t, c, in["out"], tokenGitHub, "github")
		if data := readFile(t, r.githubEnv); data != "" {
			t.Errorf("export-env: false, but GITHUB_ENV got %q", data)
		}

		// A later job step finds the installed mbot through GITHUB_PATH.
		res := run(t, withVars(nil, map[string]string{"PATH": strings.TrimSpace(readFile(t, r.githubPath)) + ":" + pathWithoutMbot()}), "bash", "-c", "mbot --version")
		if res.code != 0 || !strings.Contains(res.stdout, "version "+releaseVersion+" (commit abc1234, built 2026-11-01T00:00:00Z)") {
			t.Errorf("mbot --version from GITHUB_PATH: %s", res)
		}
	})

	t.Run("version-on-path", func(t *testing.T) {
		rel := startRelease(t, false)
		r := newGitHubRunner(t, c)
		in := maps.Clone(inputs)
		in["version"] = "v" + releaseVersion
		ar := r.runAction(t, in, pathWithMbot(releasedMbot(t)), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if ar.failed != "" {
			t.Fatalf("step %s failed: %s", ar.failed, ar.steps[ar.failed])
		}
		if got := ar.outputs["install"]["mbot"]; got != releasedMbot(t) {
			t.Errorf("install used %q, want the mbot %s on PATH", got, releasedMbot(t))
		}
		if got := rel.requests(); len(got) != 0 {
			t.Errorf("mbot %s was on PATH, yet install asked the release server for %v", releaseVersion, got)
		}
		checkIdentity(t, c, filepath.Join(r.temp, "mbot"), tokenGitHub, "github")
	})

	t.Run("checksum-mismatch", func(t *testing.T) {
		rel := startRelease(t, true)
		r := newGitHubRunner(t, c)
		in := maps.Clone(inputs)
		in["version"] = "v" + releaseVersion
		ar := r.runAction(t, in, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if ar.failed != "install" {
			t.Fatalf("a download whose checksum does not match was not refused: failed step %q\n%s", ar.failed, ar.steps["install"])
		}
		res := ar.steps["install"]
		for _, want := range []string{"checksum mismatch", rel.asset, "refusing"} {
			if !strings.Contains(res.stderr, want) {
				t.Errorf("install's error does not say %q:\n%s", want, res)
			}
		}
		if !strings.Contains(res.stdout, "::error title=mbot install::checksum mismatch") {
			t.Errorf("install did not annotate the job with the error:\n%s", res)
		}
		if _, ok := ar.outputs["install"]["mbot"]; ok || readFile(t, r.githubPath) != "" {
			t.Errorf("a refused download still set the mbot output or GITHUB_PATH")
		}
		if _, err := os.Stat(filepath.Join(r.temp, "mbot-"+releaseVersion, "mbot")); err == nil {
			t.Errorf("the refused binary was installed")
		}
	})

	// Before the first release: a clear refusal, and mbot-path (or
	// MBOT_BINARY) to use a binary already on the runner.
	for _, tc := range []struct{ name, version, want string }{
		{"no-release-latest", "latest", "mbot has no release at "},
		{"no-release-tag", "v9.9.9", "mbot release v9.9.9 does not exist at "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rel := startNoRelease(t)
			r := newGitHubRunner(t, c)
			in := maps.Clone(inputs)
			in["version"] = tc.version
			ar := r.runAction(t, in, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
			if ar.failed != "install" {
				t.Fatalf("a release that does not exist did not stop the install step: failed step %q\n%s", ar.failed, ar.steps["install"])
			}
			res := ar.steps["install"]
			for _, want := range []string{tc.want + rel.url, "mbot-path", "go build"} {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("install's error does not say %q:\n%s", want, res)
				}
			}
			if !strings.Contains(res.stdout, "::error title=mbot install::"+tc.want) {
				t.Errorf("install did not annotate the job with the error:\n%s", res)
			}
		})
	}
	for _, how := range []string{"input", "env"} {
		t.Run("mbot-path-"+how, func(t *testing.T) {
			rel := startNoRelease(t)
			bin := copyOfMbot(t)
			r := newGitHubRunner(t, c)
			in := maps.Clone(inputs)
			extra := map[string]string{"MBOT_RELEASES_URL": rel.url}
			if how == "input" {
				in["mbot-path"] = bin
			} else {
				extra["MBOT_BINARY"] = bin
			}
			ar := r.runAction(t, in, pathWithoutMbot(), extra)
			if ar.failed != "" {
				t.Fatalf("step %s failed: %s", ar.failed, ar.steps[ar.failed])
			}
			if got := ar.outputs["install"]["mbot"]; got != bin {
				t.Errorf("install used %q, want the mbot-path binary %s", got, bin)
			}
			if got := rel.requests(); len(got) != 0 {
				t.Errorf("with mbot-path, install still asked the release server for %v", got)
			}
			checkIdentity(t, c, filepath.Join(r.temp, "mbot"), tokenGitHub, "github")
		})
	}
	t.Run("mbot-path-missing", func(t *testing.T) {
		r := newGitHubRunner(t, c)
		in := maps.Clone(inputs)
		in["mbot-path"] = filepath.Join(t.TempDir(), "mbot")
		ar := r.runAction(t, in, pathWithMbot(mbotBin), nil)
		if ar.failed != "install" || !strings.Contains(ar.steps["install"].stderr, "mbot-path: "+in["mbot-path"]+" is not an executable file") {
			t.Fatalf("a mbot-path that names no file was not refused clearly: failed step %q\n%s", ar.failed, ar.steps["install"])
		}
	})

	t.Run("refused-join", func(t *testing.T) {
		r := newGitHubRunner(t, c)
		in := maps.Clone(inputs)
		in["version"] = "path"
		in["token"] = tokenGitLab // a join token for another platform
		ar := r.runAction(t, in, pathWithMbot(mbotBin), nil)
		if ar.failed != "issue" {
			t.Fatalf("a join with the wrong join token was not refused: failed step %q", ar.failed)
		}
		if !strings.Contains(ar.steps["issue"].stderr, "join_method_mismatch") {
			t.Errorf("the issue step does not name the refusal:\n%s", ar.steps["issue"])
		}
		if data := readFile(t, r.githubEnv); data != "" {
			t.Errorf("a refused join exported %q", data)
		}
		wantEmpty(t, r.temp)
	})
}

// ---- GitLab CI ----

// gitLabScript is the shell script GitLab runs for a job: before_script
// then script, in the job's working directory, with bash -eo pipefail.
func gitLabScript(t *testing.T, job map[string]any) string {
	t.Helper()
	var lines []string
	for _, key := range []string{"before_script", "script"} {
		items, _ := job[key].([]any)
		for _, item := range items {
			s, ok := item.(string)
			if !ok {
				t.Fatalf("%s item %v is not a string", key, item)
			}
			lines = append(lines, s)
		}
	}
	if len(lines) == 0 {
		t.Fatal("the component's job has neither before_script nor script")
	}
	return "cd \"$CI_PROJECT_DIR\"\n" + strings.Join(lines, "\n")
}

// TestGitLabComponent includes templates/mbot-issue.yml with inputs, takes
// its job's id_tokens, variables and before_script as GitLab would, and runs
// the script in a simulated GitLab job against a started authority.
func TestGitLabComponent(t *testing.T) {
	requireCommands(t, "bash", "curl", "tar", "gzip", "sha256sum", "awk")
	c := startCluster(t)
	comp, err := cispec.LoadGitLabComponent(filepath.Join(repoRoot(t), "templates", "mbot-issue.yml"))
	if err != nil {
		t.Fatal(err)
	}

	// job renders the component and runs its job's script in a new GitLab
	// job whose ID token has the audience the component declared. A last
	// script line of the user's reports MBOT_IDENTITY_DIR; job returns it
	// with the project directory and the job's TMPDIR.
	job := func(t *testing.T, inputs map[string]string, path string, extra map[string]string) (res result, project, identityDir, tmp string) {
		t.Helper()
		cfg, err := comp.Render(inputs)
		if err != nil {
			t.Fatal(err)
		}
		j, ok := cfg[".mbot-issue"].(map[string]any)
		if !ok {
			t.Fatalf("the component defines no .mbot-issue job: %v", slices.Collect(maps.Keys(cfg)))
		}
		idTokens, _ := j["id_tokens"].(map[string]any)
		tok, _ := idTokens["MBOT_ID_TOKEN"].(map[string]any)
		aud, _ := tok["aud"].(string)
		if aud != inputs["audience"] {
			t.Fatalf("id_tokens MBOT_ID_TOKEN aud = %q, want the audience input %q", aud, inputs["audience"])
		}
		vars, err := c.ci.GitLabEnv(aud)
		if err != nil {
			t.Fatal(err)
		}
		jobVars, _ := j["variables"].(map[string]any)
		for k, v := range jobVars {
			s, ok := v.(string)
			if !ok {
				t.Fatalf("variable %s = %v is not a string", k, v)
			}
			vars[k] = s
		}
		project, tmp = t.TempDir(), t.TempDir()
		maps.Copy(vars, map[string]string{"CI_PROJECT_DIR": project, "PATH": path, "HOME": t.TempDir(), "TMPDIR": tmp})
		maps.Copy(vars, extra)
		res = run(t, withVars(nil, vars), "bash", "-eo", "pipefail", "-c", gitLabScript(t, j)+"\n"+`echo "MBOT_IDENTITY_DIR=$MBOT_IDENTITY_DIR"`)
		for _, line := range strings.Split(res.stdout, "\n") {
			if v, ok := strings.CutPrefix(line, "MBOT_IDENTITY_DIR="); ok {
				identityDir = v
			}
		}
		return res, project, identityDir, tmp
	}
	inputs := map[string]string{"authority": c.url, "ca-pin": c.pin, "token": tokenGitLab, "audience": clusterName}

	t.Run("mbot-on-path", func(t *testing.T) {
		in := maps.Clone(inputs)
		in["ttl"] = "2h"
		in["roles"] = roleName
		res, project, dir, tmp := job(t, in, pathWithMbot(mbotBin), nil)
		if res.code != 0 {
			t.Fatalf("the component's script: %s", res)
		}
		// By default the identity is in a private directory outside the checkout.
		if filepath.Dir(filepath.Dir(dir)) != tmp || filepath.Base(dir) != "mbot" {
			t.Errorf("MBOT_IDENTITY_DIR = %q, want <mktemp -d in %s>/mbot", dir, tmp)
		}
		wantEmpty(t, project)
		sum := checkIdentity(t, c, dir, tokenGitLab, "gitlab")
		if d := time.Until(sum.NotAfter); d > 2*time.Hour+time.Minute || d < 2*time.Hour-5*time.Minute {
			t.Errorf("ttl: 2h gave an identity valid for %s", d.Round(time.Second))
		}
	})

	t.Run("download", func(t *testing.T) {
		rel := startRelease(t, false)
		in := maps.Clone(inputs)
		in["out"] = "creds"
		res, project, dir, _ := job(t, in, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if res.code != 0 {
			t.Fatalf("the component's script: %s", res)
		}
		if want := filepath.Join(project, "creds"); dir != want {
			t.Errorf("MBOT_IDENTITY_DIR = %q, want %s (out: creds, relative to the job's directory)", dir, want)
		}
		if !strings.Contains(res.stderr, "installed "+rel.asset+" (sha256 verified)") || !strings.Contains(res.stdout, "version "+releaseVersion) {
			t.Errorf("the script did not install and run mbot %s:\n%s", releaseVersion, res)
		}
		checkIdentity(t, c, filepath.Join(project, "creds"), tokenGitLab, "gitlab")
	})

	t.Run("checksum-mismatch", func(t *testing.T) {
		rel := startRelease(t, true)
		res, project, _, _ := job(t, inputs, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if res.code == 0 || !strings.Contains(res.stderr, "checksum mismatch for "+rel.asset) || !strings.Contains(res.stderr, "refusing") {
			t.Fatalf("a download whose checksum does not match was not refused: %s", res)
		}
		wantEmpty(t, project)
	})

	t.Run("no-release", func(t *testing.T) {
		rel := startNoRelease(t)
		res, project, _, _ := job(t, inputs, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if res.code == 0 || !strings.Contains(res.stderr, "mbot has no release 'latest' at "+rel.url) || !strings.Contains(res.stderr, "mbot-path") {
			t.Fatalf("a release that does not exist was not refused clearly: %s", res)
		}
		wantEmpty(t, project)
	})

	t.Run("mbot-path", func(t *testing.T) {
		rel := startNoRelease(t)
		in := maps.Clone(inputs)
		in["mbot-path"] = copyOfMbot(t)
		res, _, dir, _ := job(t, in, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if res.code != 0 {
			t.Fatalf("the component's script: %s", res)
		}
		if !strings.Contains(res.stderr, "using "+in["mbot-path"]+" (mbot-path)") {
			t.Errorf("the script did not say it used the mbot-path binary:\n%s", res)
		}
		if got := rel.requests(); len(got) != 0 {
			t.Errorf("with mbot-path, the script still asked the release server for %v", got)
		}
		checkIdentity(t, c, dir, tokenGitLab, "gitlab")
	})

	t.Run("wrong-audience", func(t *testing.T) {
		in := maps.Clone(inputs)
		in["audience"] = "another-cluster"
		res, project, _, tmp := job(t, in, pathWithMbot(mbotBin), nil)
		if res.code == 0 || !strings.Contains(res.stderr, "wrong_audience") {
			t.Fatalf("an ID token for another audience was not refused: %s", res)
		}
		wantEmpty(t, project)
		// The private directory stays empty: mbot writes nothing on a refusal.
		entries, _ := os.ReadDir(tmp)
		for _, e := range entries {
			wantEmpty(t, filepath.Join(tmp, e.Name()))
		}
	})
}

// ---- CircleCI ----

// TestCircleCIOrb packs orb/src, substitutes the issue command's parameters
// and runs its steps as CircleCI does (each in a new bash that reads
// BASH_ENV) in a simulated CircleCI job against a started authority.
func TestCircleCIOrb(t *testing.T) {
	requireCommands(t, "bash", "curl", "tar", "gzip", "sha256sum", "awk")
	c := startCluster(t)
	orb, err := cispec.PackOrb(filepath.Join(repoRoot(t), "orb", "src"))
	if err != nil {
		t.Fatal(err)
	}

	// job runs the steps of mbot/issue, then a step of the user's that reads
	// MBOT_IDENTITY_DIR, in a new CircleCI job.
	job := func(t *testing.T, params map[string]string, path string, extra map[string]string) (steps []result, identityDir, home string) {
		t.Helper()
		runSteps, err := orb.CommandRunSteps("issue", params)
		if err != nil {
			t.Fatal(err)
		}
		vars, err := c.ci.CircleCIEnv(circleOrgID)
		if err != nil {
			t.Fatal(err)
		}
		home = t.TempDir()
		project := filepath.Join(home, "project")
		if err := os.Mkdir(project, 0o755); err != nil {
			t.Fatal(err)
		}
		bashEnv := filepath.Join(t.TempDir(), "bash_env")
		writeFile(t, bashEnv, "", 0o644)
		maps.Copy(vars, map[string]string{"HOME": home, "PATH": path, "BASH_ENV": bashEnv, "CIRCLE_WORKING_DIRECTORY": "~/project",
			"TMPDIR": filepath.Join(home, "tmp")})
		if err := os.Mkdir(filepath.Join(home, "tmp"), 0o700); err != nil {
			t.Fatal(err)
		}
		maps.Copy(vars, extra)
		for _, s := range append(runSteps, cispec.RunStep{Name: "user step", Command: `test -f "$MBOT_IDENTITY_DIR/ssh_config" && echo "$MBOT_IDENTITY_DIR"`}) {
			stepVars := maps.Clone(vars)
			maps.Copy(stepVars, s.Environment)
			res := run(t, withVars(nil, stepVars), "bash", "-eo", "pipefail", "-c", "cd \"$HOME/project\"\n"+s.Command)
			steps = append(steps, res)
			if res.code != 0 {
				return steps, "", home
			}
		}
		return steps, strings.TrimSpace(steps[len(steps)-1].stdout), home
	}
	params := map[string]string{"authority": c.url, "ca-pin": c.pin, "token": tokenCircleCI}

	t.Run("mbot-on-path", func(t *testing.T) {
		p := maps.Clone(params)
		p["ttl"] = "2h"
		p["roles"] = roleName
		steps, dir, home := job(t, p, pathWithMbot(mbotBin), nil)
		if last := steps[len(steps)-1]; last.code != 0 {
			t.Fatalf("step %d: %s", len(steps), last)
		}
		// By default the identity is in a private directory outside the checkout.
		if filepath.Dir(filepath.Dir(dir)) != filepath.Join(home, "tmp") || filepath.Base(dir) != "mbot" {
			t.Errorf("MBOT_IDENTITY_DIR = %q, want <mktemp -d in %s>/mbot", dir, filepath.Join(home, "tmp"))
		}
		wantEmpty(t, filepath.Join(home, "project"))
		sum := checkIdentity(t, c, dir, tokenCircleCI, "circleci")
		if d := time.Until(sum.NotAfter); d > 2*time.Hour+time.Minute || d < 2*time.Hour-5*time.Minute {
			t.Errorf("ttl: 2h gave an identity valid for %s", d.Round(time.Second))
		}
	})

	t.Run("download", func(t *testing.T) {
		rel := startRelease(t, false)
		p := maps.Clone(params)
		p["version"] = "v" + releaseVersion
		steps, dir, home := job(t, p, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if last := steps[len(steps)-1]; last.code != 0 {
			t.Fatalf("step %d: %s", len(steps), last)
		}
		if want := "installed " + rel.asset + " (sha256"; !strings.Contains(steps[0].stdout, want) {
			t.Errorf("the install step did not say %q:\n%s", want, steps[0])
		}
		if _, err := os.Stat(filepath.Join(home, ".mbot", "bin", "mbot")); err != nil {
			t.Errorf("mbot was not installed in ~/.mbot/bin: %v", err)
		}
		checkIdentity(t, c, dir, tokenCircleCI, "circleci")
	})

	t.Run("checksum-mismatch", func(t *testing.T) {
		rel := startRelease(t, true)
		steps, _, home := job(t, params, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if len(steps) != 1 || steps[0].code == 0 {
			t.Fatalf("a download whose checksum does not match was not refused: %v", steps)
		}
		if !strings.Contains(steps[0].stderr, "checksum mismatch for "+rel.asset) || !strings.Contains(steps[0].stderr, "refusing") {
			t.Errorf("the install step's error does not explain the refusal:\n%s", steps[0])
		}
		if _, err := os.Stat(filepath.Join(home, ".mbot", "bin", "mbot")); err == nil {
			t.Errorf("the refused binary was installed")
		}
	})

	t.Run("no-release", func(t *testing.T) {
		rel := startNoRelease(t)
		steps, _, _ := job(t, params, pathWithoutMbot(), map[string]string{"MBOT_RELEASES_URL": rel.url})
		if len(steps) != 1 || steps[0].code == 0 {
			t.Fatalf("a release that does not exist did not stop the install step: %v", steps)
		}
		if !strings.Contains(steps[0].stderr, "mbot has no release 'latest' at "+rel.url) || !strings.Contains(steps[0].stderr, "mbot-path") {
			t.Errorf("the install step's error does not explain it:\n%s", steps[0])
		}
	})

	for _, how := range []string{"parameter", "env"} {
		t.Run("mbot-path-"+how, func(t *testing.T) {
			rel := startNoRelease(t)
			bin := copyOfMbot(t)
			p := maps.Clone(params)
			extra := map[string]string{"MBOT_RELEASES_URL": rel.url}
			if how == "parameter" {
				p["mbot-path"] = bin
			} else {
				extra["MBOT_BINARY"] = bin
			}
			steps, dir, _ := job(t, p, pathWithoutMbot(), extra)
			if last := steps[len(steps)-1]; last.code != 0 {
				t.Fatalf("step %d: %s", len(steps), last)
			}
			if !strings.Contains(steps[0].stdout, "using "+bin+" (mbot-path") {
				t.Errorf("the install step did not say it used the mbot-path binary:\n%s", steps[0])
			}
			if got := rel.requests(); len(got) != 0 {
				t.Errorf("with mbot-path, the install step still asked the release server for %v", got)
			}
			checkIdentity(t, c, dir, tokenCircleCI, "circleci")
		})
	}
}
