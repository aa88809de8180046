// Package ci holds the lint and schema checks of mbot's CI integrations and
// release configuration: the GitHub Action (action.yml, checked with
// actionlint), the GitLab CI/CD component (templates/), the CircleCI orb
// (orb/src), .goreleaser.yaml and the Dockerfile. The end-to-end runs of the
// same integrations against an authority are in e2e/integrations_test.go.
package ci
