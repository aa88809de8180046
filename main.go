// Command mbot gives CI jobs short-lived SSH and X.509 identities in
// exchange for their platform's OIDC or cloud identity proof, and runs the
// authority that verifies those proofs and signs the certificates.
package main

import (
	"os"

	"github.com/mbot-dev/mbot/commands"
)

func main() {
	os.Exit(commands.Run(os.Args))
}
