package client

import (
	"strings"
	"testing"
)

func TestSecretDestinationConfig(t *testing.T) {
	cfg, err := ParseConfig("mbot.yaml", []byte(`outputs:
  - destination: ./id
  - type: database
    destination: {type: kubernetes_secret, name: ci-db, namespace: ci, labels: {team: payments, "acme.io/tier": "1"}}
    database: pg
    username: ci
  - type: database
    destination:
      type: kubernetes_secret
      name: ci-db
    database: pg
    username: ci
`))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Outputs[1].Destination.Secret
	if s == nil || s.Name != "ci-db" || s.Namespace != "ci" || s.Labels["team"] != "payments" || s.MountPath != "/var/run/secrets/mbot/ci-db" {
		t.Fatalf("secret destination = %+v", s)
	}
	if cfg.Outputs[1].Name != "ci-db" || cfg.Outputs[2].Name != "ci-db-2" {
		t.Errorf("names %q, %q", cfg.Outputs[1].Name, cfg.Outputs[2].Name)
	}
	if got := cfg.Outputs[1].Destination.String(); got != "Secret ci/ci-db" {
		t.Errorf("String() = %q", got)
	}

	tests := []struct{ name, yaml, want string }{
		{"unknown field", "outputs:\n  - destination: {type: kubernetes_secret, name: a, namepsace: ci}\n", `mbot.yaml:2: unknown field "namepsace" in destination (known fields: type, name, namespace, labels, mount_path)`},
		{"no type", "outputs:\n  - destination: {name: a}\n", `mbot.yaml:2: outputs[0].destination.type: "" is not a destination type`},
		{"no name", "outputs:\n  - destination: {type: kubernetes_secret}\n", "mbot.yaml:2: outputs[0].destination.name: is required"},
		{"bad name", "outputs:\n  - destination: {type: kubernetes_secret, name: Ci_DB}\n", `outputs[0].destination.name: "Ci_DB" is not a Secret name`},
		{"bad namespace", "outputs:\n  - destination: {type: kubernetes_secret, name: a, namespace: a.b}\n", `outputs[0].destination.namespace: "a.b" is not a namespace`},
		{"bad label", "outputs:\n  - destination: {type: kubernetes_secret, name: a, labels: {\"a b\": x}}\n", `outputs[0].destination.labels: label "a b" is not a label name`},
		{"bad label value", "outputs:\n  - destination: {type: kubernetes_secret, name: a, labels: {a: \"x y\"}}\n", `value "x y" is not a label value`},
		{"managed-by label", "outputs:\n  - destination: {type: kubernetes_secret, name: a, labels: {app.kubernetes.io/managed-by: me}}\n", "is mbot's own"},
		{"relative mount path", "outputs:\n  - destination: {type: kubernetes_secret, name: a, mount_path: secrets/a}\n", "outputs[0].destination.mount_path:"},
		{"same Secret twice", "outputs:\n  - destination: {type: kubernetes_secret, name: a, namespace: ci}\n  - destination: {type: kubernetes_secret, name: a, namespace: ci}\n", "is already the destination of outputs[0]; give each output its own Secret"},
		{"a list", "outputs:\n  - destination: [a]\n", "mbot.yaml:2: destination: is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("mbot.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestResolveStartRefusesTokenSelfFromSecret(t *testing.T) {
	o := DaemonOptions{IssueOptions: IssueOptions{Authority: "https://a.example:8443", Token: "t", JoinMethod: "token", Env: func(string) string { return "" },
		Outputs: []Output{{Destination: Destination{Secret: &SecretDestination{Type: DestinationKubernetesSecret, Name: "id"}}}}}}
	if _, err := resolveSettings(o); err == nil || !strings.Contains(err.Error(), "the first output is written to a Secret") {
		t.Fatalf("err = %v", err)
	}
}
