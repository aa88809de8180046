// Package docs holds mbot's user documentation (Markdown) and the tests that
// keep it true: every refusal code is documented, every YAML example loads
// with mbot's real loaders, links between pages resolve, and the command
// line reference matches the command definitions.
package docs

//go:generate go run ../internal/clidoc/gen reference/cli.md
//go:generate go run ../internal/configdoc/gen .
