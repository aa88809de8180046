package console

import (
	"fmt"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// chart is a stacked bar chart of admitted and refused joins per step,
// drawn as SVG on the server: numbers only reach its paths, and the
// template escapes the rest.
type chart struct {
	ID, Title         string
	Width, Height     int
	Admitted, Refused int64
	// Max is the tallest bar's count (the y axis' top).
	Max int64
	// AdmittedPath and RefusedPath draw every bar of each series.
	AdmittedPath, RefusedPath string
	// Bars are the non-empty steps, each with its title (hover text), for
	// charts of few steps.
	Bars   []chartBar
	Labels []chartLabel
}

type chartBar struct {
	X, Y, W, H        float64
	Title             string
	Admitted, Refused int64
}

type chartLabel struct {
	X    float64
	Text string
}

const (
	chartWidth  = 960
	chartHeight = 160
	// chartBarsMax is the most steps whose bars are drawn one by one with
	// a title; longer spans are drawn as two paths.
	chartBarsMax = 120
)

func newChart(id, title string, sum *store.AuditSummary) *chart {
	c := &chart{ID: id, Title: title, Width: chartWidth, Height: chartHeight, Admitted: sum.Admitted, Refused: sum.Refused}
	n := len(sum.Buckets)
	if n == 0 {
		return c
	}
	for _, b := range sum.Buckets {
		c.Max = max(c.Max, b.Admitted+b.Refused)
	}
	scale := 0.0
	if c.Max > 0 {
		scale = float64(chartHeight) / float64(c.Max)
	}
	w := float64(chartWidth) / float64(n)
	var adm, ref strings.Builder
	for i, b := range sum.Buckets {
		x := float64(i) * w
		ha, hr := float64(b.Admitted)*scale, float64(b.Refused)*scale
		if b.Admitted > 0 {
			fmt.Fprintf(&adm, "M%.2f %d v-%.2f h%.2f v%.2f z", x, chartHeight, ha, w, ha)
		}
		if b.Refused > 0 {
			fmt.Fprintf(&ref, "M%.2f %.2f v-%.2f h%.2f v%.2f z", x, float64(chartHeight)-ha, hr, w, hr)
		}
		if n <= chartBarsMax && b.Admitted+b.Refused > 0 {
			c.Bars = append(c.Bars, chartBar{X: x, Y: float64(chartHeight) - ha - hr, W: w, H: ha + hr,
				Title:    fmt.Sprintf("%s: %d admitted, %d refused", b.Start.UTC().Format("15:04"), b.Admitted, b.Refused),
				Admitted: b.Admitted, Refused: b.Refused})
		}
	}
	c.AdmittedPath, c.RefusedPath = adm.String(), ref.String()
	// Six labels along the x axis.
	span := sum.Buckets[n-1].Start.Sub(sum.Buckets[0].Start) + sum.Step
	for i := 0; i <= 5; i++ {
		at := sum.Buckets[0].Start.Add(span * time.Duration(i) / 5)
		c.Labels = append(c.Labels, chartLabel{X: float64(chartWidth) * float64(i) / 5, Text: at.UTC().Format("15:04")})
	}
	return c
}
