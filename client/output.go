package client

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/suggest"
)

// outputKind is the client's half of one output type (SPEC §7): its
// mbot.yaml fields (a config struct embedded in Output, with
// CheckAndSetDefaults), the keys it needs, what it asks the authority for
// and the files it writes. Each lives in output_<type>.go and registers
// itself in outputKinds; the join does not change when one is added.
type outputKind interface {
	// keys says which fresh keys the output needs: only those are made.
	keys() (sshKey, tlsKey bool)
	// setFields names the type's own mbot.yaml fields that o sets, so that
	// they are refused on an output of another type.
	setFields(o *Output) []string
	// checkAndSetDefaults checks the type's own fields of o.
	checkAndSetDefaults(o *Output) error
	// request fills in the type's part of the output's request.
	request(o *Output, req *identity.OutputRequest)
	// render lays out the output's files for dir (the absolute path they
	// will live at) from the authority's answer, checking every value it
	// writes.
	render(dir string, keys *identity.Keys, resp *identity.JoinResponse, grant *identity.OutputResponse) ([]identity.File, error)
}

// summarizer is an outputKind that says, in one line for mbot issue to
// print, what an output holds and how to use it.
type summarizer interface {
	summary(dir string, grant *identity.OutputResponse) string
}

// configurer is an outputKind with mbot.yaml fields of its own: the struct
// embedded in Output that holds them, so that a mistyped field is matched
// against the fields of that kind and an error lists them.
type configurer interface{ config() any }

// outputFields are the mbot.yaml fields of an output of type typ: those
// every output has, then its type's own.
func outputFields(typ string) []string {
	var fields []string
	t := reflect.TypeOf(Output{})
	for i := range t.NumField() {
		if name, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && opts != "inline" {
			fields = append(fields, name)
		}
	}
	if c, ok := outputKinds[typ].(configurer); ok {
		fields = append(fields, suggest.YAMLFields(c.config())...)
	}
	return fields
}

// outputKinds are the output types this client writes, by name.
var outputKinds = map[string]outputKind{}

func outputTypeNames() []string { return slices.Sorted(maps.Keys(outputKinds)) }

// newKeys makes the fresh keys an output of kind needs, and no other:
// a join with several outputs pays only for what each certifies.
func newKeys(kind outputKind) (*identity.Keys, error) {
	wantSSH, wantTLS := kind.keys()
	k := &identity.Keys{}
	var err error
	if wantSSH {
		if _, k.SSH, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, fmt.Errorf("generating SSH key: %w", err)
		}
	}
	if wantTLS {
		if k.TLS, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("generating TLS key: %w", err)
		}
	}
	return k, nil
}
