package client

import "github.com/mbot-dev/mbot/identity"

// identityOutput is the identity output type: the directory of SPEC §4.
// It has no fields of its own.
type identityOutput struct{}

func init() { outputKinds[OutputTypeIdentity] = identityOutput{} }

func (identityOutput) keys() (sshKey, tlsKey bool)              { return true, true }
func (identityOutput) setFields(*Output) []string               { return nil }
func (identityOutput) checkAndSetDefaults(*Output) error        { return nil }
func (identityOutput) request(*Output, *identity.OutputRequest) {}

func (identityOutput) render(dir string, keys *identity.Keys, resp *identity.JoinResponse, grant *identity.OutputResponse) ([]identity.File, error) {
	return identity.RenderIdentity(dir, keys, resp, grant)
}
