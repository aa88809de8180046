// Package e2e holds mbot's end-to-end tests.
package e2e
