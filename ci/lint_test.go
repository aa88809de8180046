package ci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/cispec"
	"github.com/mbot-dev/mbot/internal/skipreport"
	"gopkg.in/yaml.v3"
)

// actionlintModule is the actionlint the GitHub Action is checked with,
// run with `go run` so that it is no dependency of mbot's module.
const actionlintModule = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"

// root is the repository root (the tests run in ci/).
const root = ".."

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func unmarshal(t *testing.T, path string, v any) {
	t.Helper()
	if err := yaml.Unmarshal([]byte(readFile(t, path)), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// unavailable skips a test that needs a tool this machine lacks, except in
// CI (.ci/run installs it), where it fails.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	skipreport.Skip(t, msg)
}

// slowCheck skips a check that takes minutes on a fresh machine (building
// actionlint, cross-compiling every package) unless CI=true or
// MBOT_SLOW_CHECKS=1: .ci/run runs them, a plain go test ./... need not.
func slowCheck(t *testing.T, what string) {
	t.Helper()
	if testing.Short() {
		skipreport.Skipf(t, "%s takes a while; not in -short", what)
	}
	if os.Getenv("CI") != "true" && os.Getenv("MBOT_SLOW_CHECKS") != "1" {
		skipreport.Skipf(t, "%s takes minutes on a fresh machine; .ci/run runs it (or set MBOT_SLOW_CHECKS=1)", what)
	}
}

// docBlocks returns the fenced code blocks in a language of the user
// documentation: README.md and every Markdown file under docs/.
func docBlocks(t *testing.T, lang string) []string {
	t.Helper()
	files := []string{filepath.Join(root, "README.md")}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	re := regexp.MustCompile("(?ms)^```" + lang + "\n(.*?)^```")
	for _, f := range files {
		for _, m := range re.FindAllStringSubmatch(readFile(t, f), -1) {
			blocks = append(blocks, m[1])
		}
	}
	return blocks
}

// ---- GitHub Action ----

type actionMeta struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Inputs      map[string]struct {
		Description string  `yaml:"description"`
		Required    bool    `yaml:"required"`
		Default     *string `yaml:"default"`
	} `yaml:"inputs"`
	Outputs map[string]struct {
		Description string `yaml:"description"`
		Value       string `yaml:"value"`
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

var ghExpr = regexp.MustCompile(`\$\{\{\s*([^}]*?)\s*\}\}`)

// TestActionMetadata checks action.yml's structure: the inputs and outputs
// the README documents, every expression naming a declared input or an
// earlier step, and every script it runs present.
func TestActionMetadata(t *testing.T) {
	var a actionMeta
	unmarshal(t, filepath.Join(root, "action.yml"), &a)
	if a.Name == "" || a.Description == "" || a.Runs.Using != "composite" {
		t.Fatalf("action.yml needs name, description and runs.using: composite; got %q %q %q", a.Name, a.Description, a.Runs.Using)
	}
	for _, name := range []string{"authority", "ca-pin", "token", "roles", "ttl", "out", "version", "join-method", "export-env"} {
		in, ok := a.Inputs[name]
		if !ok {
			t.Errorf("action.yml lacks input %s", name)
			continue
		}
		if in.Description == "" {
			t.Errorf("input %s has no description", name)
		}
		if !in.Required && in.Default == nil {
			t.Errorf("optional input %s has no default", name)
		}
	}
	if d := a.Inputs["version"].Default; d == nil || *d != "latest" {
		t.Errorf("input version should default to latest")
	}
	if d := a.Inputs["export-env"].Default; d == nil || *d != "true" {
		t.Errorf("input export-env should default to true")
	}
	for _, name := range []string{"destination-dir", "ssh-config", "identity-file"} {
		if _, ok := a.Outputs[name]; !ok {
			t.Errorf("action.yml lacks output %s", name)
		}
	}

	stepIDs := map[string]int{}
	for i, s := range a.Runs.Steps {
		if s.ID == "" || s.Shell != "bash" {
			t.Errorf("step %d needs an id and shell: bash (the same script on Linux, macOS and Windows runners)", i)
		}
		stepIDs[s.ID] = i
	}
	used := map[string]bool{}
	checkExpr := func(where string, stepIndex int, s string) {
		for _, m := range ghExpr.FindAllStringSubmatch(s, -1) {
			parts := strings.Split(m[1], ".")
			switch {
			case len(parts) == 2 && parts[0] == "inputs":
				if _, ok := a.Inputs[parts[1]]; !ok {
					t.Errorf("%s: %s names no declared input", where, m[0])
				}
				used[parts[1]] = true
			case len(parts) == 4 && parts[0] == "steps" && parts[2] == "outputs":
				i, ok := stepIDs[parts[1]]
				if !ok || i >= stepIndex {
					t.Errorf("%s: %s names no earlier step", where, m[0])
				}
			default:
				t.Errorf("%s: unexpected expression %s", where, m[0])
			}
		}
	}
	scriptRef := regexp.MustCompile(`"\$GITHUB_ACTION_PATH/([^"]+)"`)
	for i, s := range a.Runs.Steps {
		for k, v := range s.Env {
			checkExpr(fmt.Sprintf("step %s env %s", s.ID, k), i, v)
		}
		if ghExpr.MatchString(s.Run) {
			t.Errorf("step %s: run: has an expression; pass values through env: instead (no script injection)", s.ID)
		}
		m := scriptRef.FindStringSubmatch(s.Run)
		if m == nil {
			t.Errorf("step %s: run: %q does not run a script of the action", s.ID, s.Run)
			continue
		}
		if st, err := os.Stat(filepath.Join(root, m[1])); err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("step %s runs %s, which is missing or not executable", s.ID, m[1])
		}
	}
	for name, out := range a.Outputs {
		if out.Description == "" {
			t.Errorf("output %s has no description", name)
		}
		checkExpr("output "+name, len(a.Runs.Steps), out.Value)
	}
	for name := range a.Inputs {
		if !used[name] {
			t.Errorf("input %s is declared but no step uses it", name)
		}
	}
}

// TestActionlint lints the example workflow (examples/github/deploy.yml,
// which docs/platforms/github-actions.md links to) with actionlint, with `uses: mbot-dev/mbot@v1` pointed
// at this checkout so that actionlint also checks action.yml and the inputs
// and outputs the workflow uses against it.
func TestActionlint(t *testing.T) {
	slowCheck(t, "building and running actionlint")
	example := readFile(t, filepath.Join(root, "examples", "github", "deploy.yml"))
	if !strings.Contains(example, "uses: mbot-dev/mbot@v1") {
		t.Fatal("examples/github/deploy.yml does not use mbot-dev/mbot@v1")
	}
	if !strings.Contains(readFile(t, filepath.Join(root, "docs", "platforms", "github-actions.md")), "(../../examples/github/deploy.yml)") {
		t.Error("docs/platforms/github-actions.md does not link to examples/github/deploy.yml")
	}
	var wf struct {
		Permissions map[string]string `yaml:"permissions"`
		Jobs        map[string]struct {
			Strategy struct {
				Matrix map[string]any `yaml:"matrix"`
			} `yaml:"strategy"`
			Steps []map[string]any `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal([]byte(example), &wf); err != nil {
		t.Fatal(err)
	}
	if wf.Permissions["id-token"] != "write" {
		t.Error("the example workflow lacks permissions: id-token: write")
	}
	matrix := false
	for _, j := range wf.Jobs {
		matrix = matrix || len(j.Strategy.Matrix) > 0
	}
	if !matrix || !strings.Contains(example, "ssh -F") {
		t.Error("the example workflow should show ssh to a host and a matrix job")
	}

	project := t.TempDir()
	for _, f := range []string{"action.yml", "action/install.sh", "action/issue.sh"} {
		writeFile(t, filepath.Join(project, f), readFile(t, filepath.Join(root, f)))
	}
	writeFile(t, filepath.Join(project, ".github", "workflows", "deploy.yml"), strings.ReplaceAll(example, "uses: mbot-dev/mbot@v1", "uses: ./"))
	writeFile(t, filepath.Join(project, "examples", "deploy.yml"), example)
	// actionlint finds the project (and so local actions) by its .git.
	if err := os.Mkdir(filepath.Join(project, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}

	goTool, err := exec.LookPath("go")
	if err != nil {
		unavailable(t, "the go command is needed to run actionlint")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	version := exec.CommandContext(ctx, goTool, "run", actionlintModule, "-version")
	version.Dir = project
	if out, err := version.CombinedOutput(); err != nil {
		unavailable(t, "cannot fetch or build %s: %v\n%s", actionlintModule, err, out)
	} else {
		t.Logf("actionlint %s", strings.Fields(string(out))[0])
	}
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Log("shellcheck is not installed: actionlint does not check the run: scripts")
	}

	lint := exec.CommandContext(ctx, goTool, "run", actionlintModule, "-format", "{{json .}}",
		".github/workflows/deploy.yml", "examples/deploy.yml")
	lint.Dir = project
	var stdout, stderr bytes.Buffer
	lint.Stdout, lint.Stderr = &stdout, &stderr
	err = lint.Run()
	var findings []struct {
		Message  string `json:"message"`
		Filepath string `json:"filepath"`
		Line     int    `json:"line"`
		Column   int    `json:"column"`
		Kind     string `json:"kind"`
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &findings); jerr != nil {
		t.Fatalf("actionlint: %v (%v)\nstdout:\n%s\nstderr:\n%s", err, jerr, stdout.String(), stderr.String())
	}
	for _, f := range findings {
		t.Errorf("actionlint: %s:%d:%d: %s [%s]", f.Filepath, f.Line, f.Column, f.Message, f.Kind)
	}
	if err != nil && len(findings) == 0 {
		t.Errorf("actionlint failed: %v\n%s", err, stderr.String())
	}
}

// ---- shell scripts ----

// TestShellcheck checks every script the integrations run: the action's and
// the orb's (bash), and the GitLab component's before_script (POSIX sh,
// since the default image is Alpine).
func TestShellcheck(t *testing.T) {
	shellcheck, err := exec.LookPath("shellcheck")
	if err != nil {
		unavailable(t, "shellcheck is not installed (apt-get install shellcheck)")
	}
	scripts := []string{"action/install.sh", "action/issue.sh", "orb/src/scripts/install.sh", "orb/src/scripts/issue.sh"}
	var args []string
	for _, s := range scripts {
		args = append(args, filepath.Join(root, s))
	}
	comp, err := cispec.LoadGitLabComponent(filepath.Join(root, "templates", "mbot-issue.yml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := comp.Render(map[string]string{"authority": "https://auth.example:8443", "token": "t", "audience": "acme"})
	if err != nil {
		t.Fatal(err)
	}
	job, _ := cfg[".mbot-issue"].(map[string]any)
	var lines []string
	for _, key := range []string{"before_script", "script"} {
		items, _ := job[key].([]any)
		for _, item := range items {
			lines = append(lines, fmt.Sprint(item))
		}
	}
	gitlab := filepath.Join(t.TempDir(), "gitlab-before-script.sh")
	writeFile(t, gitlab, "#!/bin/sh\n# The job's variables:\n: \"$MBOT_VERSION\"\n"+strings.Join(lines, "\n")+"\n")
	args = append(args, gitlab)
	out, err := exec.Command(shellcheck, append([]string{"--severity=style"}, args...)...).CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// ---- GitLab CI/CD component ----

// TestGitLabComponentSpec checks templates/mbot-issue.yml: the component
// layout, a spec:inputs header whose inputs are all declared, described and
// used, and a job template with the ID token and `mbot issue`.
func TestGitLabComponentSpec(t *testing.T) {
	matches, _ := filepath.Glob(filepath.Join(root, "templates", "*"))
	for _, m := range matches {
		st, err := os.Stat(m)
		if err != nil {
			t.Fatal(err)
		}
		// GitLab's layout: templates/<name>.yml or templates/<name>/template.yml.
		if !st.IsDir() && filepath.Ext(m) != ".yml" {
			t.Errorf("%s: a component is templates/<name>.yml or templates/<name>/template.yml", m)
		}
	}
	path := filepath.Join(root, "templates", "mbot-issue.yml")
	comp, err := cispec.LoadGitLabComponent(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"authority", "ca-pin", "token", "roles", "audience", "stage", "image"} {
		if _, ok := comp.Inputs[name]; !ok {
			t.Errorf("spec:inputs lacks %s", name)
		}
	}
	inputName := regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	for _, name := range comp.InputOrder {
		in := comp.Inputs[name]
		if !inputName.MatchString(name) {
			t.Errorf("input name %q", name)
		}
		if in.Description == "" {
			t.Errorf("input %s has no description", name)
		}
		if in.Type != "" && in.Type != "string" {
			t.Errorf("input %s: type %q, the template interpolates strings", name, in.Type)
		}
	}
	referenced := comp.Referenced()
	for _, name := range referenced {
		if _, ok := comp.Inputs[name]; !ok {
			t.Errorf("$[[ inputs.%s ]] is not declared in spec:inputs", name)
		}
	}
	for _, name := range comp.InputOrder {
		if !slices.Contains(referenced, name) {
			t.Errorf("input %s is declared but not used", name)
		}
	}
	var mandatory []string
	for _, name := range comp.InputOrder {
		if comp.Inputs[name].Default == nil {
			mandatory = append(mandatory, name)
		}
	}
	if want := []string{"authority", "token", "audience"}; !slices.Equal(mandatory, want) {
		t.Errorf("mandatory inputs %v, want %v", mandatory, want)
	}
	if _, err := comp.Render(map[string]string{"authority": "https://a:8443", "token": "t"}); err == nil {
		t.Error("the component renders without its mandatory audience input")
	}

	cfg, err := comp.Render(map[string]string{"authority": "https://auth.example:8443", "token": "gitlab-deploy", "audience": "acme", "stage": "deploy", "image": "registry.example/tools:1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg) != 1 {
		t.Errorf("the component defines %v, want one job template", slices.Collect(maps.Keys(cfg)))
	}
	job, ok := cfg[".mbot-issue"].(map[string]any)
	if !ok {
		t.Fatalf("no .mbot-issue job (the job-name default)")
	}
	keywords := []string{"stage", "image", "id_tokens", "variables", "before_script", "script", "after_script", "rules", "tags"}
	for k := range job {
		if !slices.Contains(keywords, k) {
			t.Errorf("job keyword %q is not one the component should set", k)
		}
	}
	if job["stage"] != "deploy" || job["image"] != "registry.example/tools:1" {
		t.Errorf("stage %v image %v: inputs not interpolated", job["stage"], job["image"])
	}
	tok, _ := job["id_tokens"].(map[string]any)["MBOT_ID_TOKEN"].(map[string]any)
	if tok["aud"] != "acme" {
		t.Errorf("id_tokens: MBOT_ID_TOKEN: aud: is %v, want the audience input", tok["aud"])
	}
	if !strings.Contains(comp.Text, "aud: $[[ inputs.audience ]]") {
		t.Error("id_tokens: MBOT_ID_TOKEN: aud: is not $[[ inputs.audience ]]")
	}
	vars, _ := job["variables"].(map[string]any)
	for k, want := range map[string]string{"MBOT_AUTHORITY": "https://auth.example:8443", "MBOT_TOKEN": "gitlab-deploy", "MBOT_JOIN_METHOD": "gitlab", "MBOT_TTL": "1h"} {
		if vars[k] != want {
			t.Errorf("variable %s = %v, want %q", k, vars[k], want)
		}
	}
	script, _ := job["before_script"].([]any)
	if len(script) == 0 || script[len(script)-1] != "mbot issue" {
		t.Errorf("before_script should end with mbot issue: %v", script)
	}

	// The documented pipeline includes the component with inputs it declares.
	found := false
	for _, block := range docBlocks(t, "yaml") {
		if !strings.Contains(block, "component: $CI_SERVER_FQDN/mbot-dev/mbot/mbot-issue@") {
			continue
		}
		found = true
		var pipeline map[string]any
		if err := yaml.Unmarshal([]byte(block), &pipeline); err != nil {
			t.Fatalf("documented GitLab pipeline: %v", err)
		}
		includes, _ := pipeline["include"].([]any)
		if len(includes) == 0 {
			t.Fatal("documented GitLab pipeline has no include:")
		}
		inc, _ := includes[0].(map[string]any)
		given := map[string]string{}
		for k, v := range inc["inputs"].(map[string]any) {
			given[k] = fmt.Sprint(v)
		}
		if _, err := comp.Render(given); err != nil {
			t.Errorf("documented GitLab pipeline: %v", err)
		}
		extends := false
		for name, j := range pipeline {
			if m, ok := j.(map[string]any); ok && m["extends"] == ".mbot-issue" {
				extends = true
				if _, ok := m["script"]; !ok {
					t.Errorf("documented job %s extends .mbot-issue without a script", name)
				}
			}
		}
		if !extends {
			t.Error("no job of the documented GitLab pipeline extends .mbot-issue")
		}
	}
	if !found {
		t.Error("README.md and docs/ have no GitLab pipeline that includes the component")
	}
}

// ---- CircleCI orb ----

var orbParamTypes = []string{"string", "boolean", "integer", "enum", "env_var_name", "steps", "executor"}

// TestOrbSchema packs orb/src as `circleci orb pack` does and checks it
// against the orb schema: the top-level keys, version 2.1, the issue
// command's parameters (type, description, a default of that type) and
// steps, every << parameters.x >> declared, and the examples.
func TestOrbSchema(t *testing.T) {
	src := filepath.Join(root, "orb", "src")
	orb, err := cispec.PackOrb(src)
	if err != nil {
		t.Fatal(err)
	}
	for k := range orb {
		if !slices.Contains([]string{"version", "description", "display", "orbs", "commands", "jobs", "executors", "examples"}, k) {
			t.Errorf("orb key %q is not in the orb schema", k)
		}
	}
	if v := fmt.Sprint(orb["version"]); v != "2.1" {
		t.Errorf("orb version %q, want 2.1", v)
	}
	if s, _ := orb["description"].(string); s == "" {
		t.Error("the orb has no description")
	}
	display, _ := orb["display"].(map[string]any)
	if u, _ := display["source_url"].(string); !strings.HasPrefix(u, "https://") {
		t.Error("display.source_url should be the repository's URL")
	}

	commands, _ := orb["commands"].(map[string]any)
	issue, ok := commands["issue"].(map[string]any)
	if !ok {
		t.Fatalf("the orb has no issue command: %v", slices.Collect(maps.Keys(commands)))
	}
	if s, _ := issue["description"].(string); s == "" {
		t.Error("commands.issue has no description")
	}
	params, _ := issue["parameters"].(map[string]any)
	for _, name := range []string{"authority", "ca-pin", "token", "roles", "out", "ttl"} {
		if _, ok := params[name]; !ok {
			t.Errorf("commands.issue.parameters lacks %s", name)
		}
	}
	for name, p := range params {
		spec, _ := p.(map[string]any)
		typ, _ := spec["type"].(string)
		if !slices.Contains(orbParamTypes, typ) {
			t.Errorf("parameter %s: type %q is not one of %v", name, typ, orbParamTypes)
		}
		if s, _ := spec["description"].(string); s == "" {
			t.Errorf("parameter %s has no description", name)
		}
		for k := range spec {
			if !slices.Contains([]string{"type", "description", "default", "enum"}, k) {
				t.Errorf("parameter %s: key %q is not in the schema", name, k)
			}
		}
		if def, ok := spec["default"]; ok {
			okType := false
			switch typ {
			case "string", "env_var_name":
				_, okType = def.(string)
			case "boolean":
				_, okType = def.(bool)
			case "integer":
				_, okType = def.(int)
			case "enum":
				okType = slices.Contains(spec["enum"].([]any), def)
			default:
				okType = true
			}
			if !okType {
				t.Errorf("parameter %s: default %v is not a %s", name, def, typ)
			}
		}
	}
	steps, _ := issue["steps"].([]any)
	if len(steps) == 0 {
		t.Fatal("commands.issue has no steps")
	}
	raw := readFile(t, filepath.Join(src, "commands", "issue.yml"))
	used := map[string]bool{}
	for _, name := range cispec.ParameterRefs(raw) {
		used[name] = true
		if _, ok := params[name]; !ok {
			t.Errorf("<< parameters.%s >> is not a parameter of issue", name)
		}
	}
	for name := range params {
		if !used[name] {
			t.Errorf("parameter %s is declared but not used", name)
		}
	}
	for i, s := range steps {
		step, _ := s.(map[string]any)
		run, ok := step["run"].(map[string]any)
		if !ok || len(step) != 1 {
			t.Errorf("step %d: %v, want a run step", i, s)
			continue
		}
		cmd, _ := run["command"].(string)
		if cmd == "" || strings.Contains(cmd, "<<include") {
			t.Errorf("step %d: command not included: %q", i, cmd)
		}
		// Included scripts are not escaped: a << would start a parameter.
		if strings.Contains(cmd, "<<") {
			t.Errorf("step %d: the script contains <<, which CircleCI reads as a parameter", i)
		}
		if name, _ := run["name"].(string); name == "" {
			t.Errorf("step %d has no name", i)
		}
	}
	if rs, err := orb.CommandRunSteps("issue", map[string]string{"token": "t"}); err != nil {
		t.Error(err)
	} else if !strings.Contains(rs[len(rs)-1].Command, "mbot issue") || !strings.Contains(rs[len(rs)-1].Command, "MBOT_JOIN_METHOD=circleci") {
		t.Errorf("the last step does not run mbot issue with the circleci join method:\n%s", rs[len(rs)-1].Command)
	}

	examples, _ := orb["examples"].(map[string]any)
	if len(examples) == 0 {
		t.Fatal("the orb has no examples")
	}
	for name, e := range examples {
		ex, _ := e.(map[string]any)
		if s, _ := ex["description"].(string); s == "" {
			t.Errorf("example %s has no description", name)
		}
		usage, _ := ex["usage"].(map[string]any)
		if fmt.Sprint(usage["version"]) != "2.1" {
			t.Errorf("example %s: usage.version is not 2.1", name)
		}
		orbs, _ := usage["orbs"].(map[string]any)
		ref, _ := orbs["mbot"].(string)
		if !strings.HasPrefix(ref, "mbot-dev/mbot@") {
			t.Errorf("example %s does not import the orb as mbot: mbot-dev/mbot@<version>", name)
		}
		calls := 0
		var visit func(any)
		visit = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				for k, sub := range v {
					if k == "mbot/issue" {
						calls++
						args, _ := sub.(map[string]any)
						for p := range args {
							if _, ok := params[p]; !ok {
								t.Errorf("example %s passes unknown parameter %s to mbot/issue", name, p)
							}
						}
					}
					visit(sub)
				}
			case []any:
				for _, sub := range v {
					visit(sub)
				}
			}
		}
		visit(usage)
		if calls == 0 {
			t.Errorf("example %s does not use mbot/issue", name)
		}
	}
}

// ---- releases ----

// TestGoreleaserConfig checks .goreleaser.yaml against what the rest of the
// repository relies on: static builds for the six targets with the
// ldflags that `mbot --version` prints, archive names that the GitHub Action,
// the GitLab component and the orb download, checksums, SBOMs and the
// container image. `goreleaser check` itself runs in .ci/run (and here when
// goreleaser is on PATH).
func TestGoreleaserConfig(t *testing.T) {
	var cfg struct {
		Version int `yaml:"version"`
		Builds  []struct {
			ID      string   `yaml:"id"`
			Binary  string   `yaml:"binary"`
			Env     []string `yaml:"env"`
			Ldflags []string `yaml:"ldflags"`
			Goos    []string `yaml:"goos"`
			Goarch  []string `yaml:"goarch"`
		} `yaml:"builds"`
		Archives []struct {
			NameTemplate    string   `yaml:"name_template"`
			Files           []string `yaml:"files"`
			Formats         []string `yaml:"formats"`
			FormatOverrides []struct {
				Goos    string   `yaml:"goos"`
				Formats []string `yaml:"formats"`
			} `yaml:"format_overrides"`
		} `yaml:"archives"`
		Checksum struct {
			NameTemplate string `yaml:"name_template"`
		} `yaml:"checksum"`
		SBOMs []struct {
			Artifacts string `yaml:"artifacts"`
		} `yaml:"sboms"`
		DockersV2 []struct {
			Dockerfile string            `yaml:"dockerfile"`
			Images     []string          `yaml:"images"`
			Platforms  []string          `yaml:"platforms"`
			Labels     map[string]string `yaml:"labels"`
		} `yaml:"dockers_v2"`
	}
	unmarshal(t, filepath.Join(root, ".goreleaser.yaml"), &cfg)
	if cfg.Version != 2 || len(cfg.Builds) != 1 {
		t.Fatalf("want goreleaser config version 2 with one build, got version %d, %d builds", cfg.Version, len(cfg.Builds))
	}
	b := cfg.Builds[0]
	if b.Binary != "mbot" || !slices.Contains(b.Env, "CGO_ENABLED=0") {
		t.Errorf("the build should be binary mbot with CGO_ENABLED=0 (static)")
	}
	if !slices.Equal(b.Goos, []string{"linux", "darwin", "windows"}) || !slices.Equal(b.Goarch, []string{"amd64", "arm64"}) {
		t.Errorf("targets %v × %v, want linux/darwin/windows × amd64/arm64", b.Goos, b.Goarch)
	}

	// The -X flags name variables of package commands that --version prints.
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join(root, "commands", "app.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if spec, ok := n.(*ast.ValueSpec); ok {
			for _, id := range spec.Names {
				vars[id.Name] = true
			}
		}
		return true
	})
	xflag := regexp.MustCompile(`-X github\.com/mbot-dev/mbot/commands\.(\w+)=\{\{\s*\.(\w+)\s*\}\}`)
	got := map[string]string{}
	for _, m := range xflag.FindAllStringSubmatch(strings.Join(b.Ldflags, " "), -1) {
		got[m[1]] = m[2]
		if !vars[m[1]] {
			t.Errorf("ldflags set commands.%s, which commands/app.go does not declare", m[1])
		}
	}
	if want := map[string]string{"version": "Version", "commit": "ShortCommit", "date": "Date"}; !maps.Equal(got, want) {
		t.Errorf("ldflags set %v, want %v", got, want)
	}
	versionGo := readFile(t, filepath.Join(root, "commands", "version.go"))
	if !strings.Contains(versionGo, `fmt.Sprintf("%s (commit %s, built %s)", version, commit, date)`) {
		t.Error("commands/version.go no longer prints version, commit and date in --version")
	}

	// Archive names: the scripts that download them build the same names.
	if len(cfg.Archives) != 1 {
		t.Fatalf("want one archive, got %d", len(cfg.Archives))
	}
	a := cfg.Archives[0]
	if a.NameTemplate != "{{ .ProjectName }}_{{ .Version }}_{{ .Os }}_{{ .Arch }}" {
		t.Errorf("archive name_template %q: action/install.sh, templates/mbot-issue.yml and orb/src/scripts/install.sh expect mbot_<version>_<os>_<arch>", a.NameTemplate)
	}
	if !slices.Equal(a.Formats, []string{"tar.gz"}) || len(a.FormatOverrides) != 1 || a.FormatOverrides[0].Goos != "windows" || !slices.Equal(a.FormatOverrides[0].Formats, []string{"zip"}) {
		t.Errorf("archives should be tar.gz, zip on windows")
	}
	for file, want := range map[string]string{
		"action/install.sh":          "asset=mbot_${version}_${os}_${arch}.${ext}",
		"templates/mbot-issue.yml":   `"^mbot_[^_]+_linux_" arch "[.]tar[.]gz$"`,
		"orb/src/scripts/install.sh": `want="_${os}_${arch}.tar.gz"`,
	} {
		if !strings.Contains(readFile(t, filepath.Join(root, file)), want) {
			t.Errorf("%s no longer builds the archive name as %s", file, want)
		}
	}
	// The license: Apache-2.0 in LICENSE, shipped in every archive and
	// named by its SPDX identifier in the image's OCI labels.
	license := readFile(t, filepath.Join(root, "LICENSE"))
	if !strings.Contains(license, "Apache License\n                           Version 2.0, January 2004") || !strings.Contains(license, "END OF TERMS AND CONDITIONS") {
		t.Error("LICENSE is not the Apache License 2.0 text")
	}
	if !slices.Contains(a.Files, "LICENSE") {
		t.Errorf("the archives hold %v: LICENSE must ship with the binary", a.Files)
	}
	if cfg.Checksum.NameTemplate != "checksums.txt" {
		t.Errorf("checksum name_template %q: the installers download checksums.txt", cfg.Checksum.NameTemplate)
	}
	if len(cfg.SBOMs) != 1 || cfg.SBOMs[0].Artifacts != "archive" {
		t.Errorf("want one sboms entry over the archives")
	}

	if len(cfg.DockersV2) != 1 {
		t.Fatalf("want one dockers_v2 image, got %d", len(cfg.DockersV2))
	}
	d := cfg.DockersV2[0]
	if !slices.Equal(d.Platforms, []string{"linux/amd64", "linux/arm64"}) || !slices.Equal(d.Images, []string{"ghcr.io/mbot-dev/mbot"}) {
		t.Errorf("image %v for %v", d.Images, d.Platforms)
	}
	if got := d.Labels["org.opencontainers.image.licenses"]; got != "Apache-2.0" {
		t.Errorf("image label org.opencontainers.image.licenses is %q, want the SPDX identifier Apache-2.0", got)
	}
	dockerfile := readFile(t, filepath.Join(root, d.Dockerfile))
	from := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(dockerfile, -1)
	if len(from) != 1 || !(from[0][1] == "scratch" || strings.HasPrefix(from[0][1], "gcr.io/distroless/static")) {
		t.Errorf("the Dockerfile should be one stage on scratch or distroless/static: %v", from)
	}
	for _, want := range []string{"ARG TARGETPLATFORM", "COPY $TARGETPLATFORM/mbot ", "ENTRYPOINT [\"/usr/local/bin/mbot\"]", "USER nonroot"} {
		if !strings.Contains(dockerfile, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}

	if goreleaser, err := exec.LookPath("goreleaser"); err == nil {
		cmd := exec.Command(goreleaser, "check")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("goreleaser check: %v\n%s", err, out)
		}
	} else {
		t.Log("goreleaser is not on PATH; .ci/run runs goreleaser check")
	}
}

// TestReleaseTargetsCompile type-checks every package, tests included, for
// the other operating systems a release builds for: code behind a Linux
// build tag must not leave them with undefined names. (.ci/run's snapshot
// build covers only this machine's target.)
func TestReleaseTargetsCompile(t *testing.T) {
	slowCheck(t, "vetting every package for darwin and windows")
	for _, target := range [][2]string{{"darwin", "arm64"}, {"windows", "amd64"}} {
		t.Run(target[0]+"/"+target[1], func(t *testing.T) {
			cmd := exec.Command("go", "vet", "./...")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOOS="+target[0], "GOARCH="+target[1], "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("GOOS=%s GOARCH=%s go vet ./...: %v\n%s", target[0], target[1], err, out)
			}
		})
	}
}
