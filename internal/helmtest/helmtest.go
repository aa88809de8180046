// Package helmtest lints and renders the charts in deploy/helm for tests,
// with Helm's own libraries (helm.sh/helm/v4), as `helm lint` and `helm
// template` do. Only tests import it: the mbot binary links no Helm
// (TestHelmNotInBinary in deploy/helm checks).
package helmtest

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
)

// Lint runs helm lint's rules on the chart in dir with values, and returns
// every message of warning or error severity ("" when clean).
func Lint(dir string, values map[string]any, namespace string) string {
	res := lint.RunAll(dir, values, namespace)
	var out []string
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev {
			out = append(out, m.Error())
		}
	}
	return strings.Join(out, "\n")
}

// Render renders the chart in dir as `helm template NAME dir --namespace
// NS` with values does, and returns its manifests as one YAML stream, in
// the order of the templates' file names (NOTES.txt and helpers left out).
func Render(dir, name, namespace string, values map[string]any) (string, error) {
	chrt, err := loader.Load(dir)
	if err != nil {
		return "", err
	}
	vals, err := util.ToRenderValues(chrt, values, common.ReleaseOptions{Name: name, Namespace: namespace, IsInstall: true, Revision: 1}, nil)
	if err != nil {
		return "", err
	}
	files, err := engine.Render(chrt, vals)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, f := range slices.Sorted(maps.Keys(files)) {
		if path.Ext(f) != ".yaml" || strings.TrimSpace(files[f]) == "" {
			continue
		}
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", f, strings.TrimSpace(files[f]))
	}
	return b.String(), nil
}
