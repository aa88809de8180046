package authority

import (
	"fmt"
	"io"
	"log/slog"
)

// LogFormats are the formats of the authority's log (--log-format).
var LogFormats = []string{"text", "json"}

// NewLogger returns the authority's logger writing to w in format: "text"
// (key=value, values quoted when they need it) or "json" (one object per
// line, for log shippers). Both escape every value, so a value a caller
// chose cannot forge a line; the authority bounds the values it logs.
func NewLogger(w io.Writer, format string) (*slog.Logger, error) {
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("log format %q is not one of text, json (--log-format, MBOT_LOG_FORMAT)", format)
}
