package phase

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		phases  []Phase[*[]string]
		ran     []string
		wantErr bool
		logs    []string
	}{
		{
			name: "all ok",
			phases: []Phase[*[]string]{
				{Name: "a", Run: record("a", nil)},
				{Name: "b", Run: record("b", nil), Critical: true},
			},
			ran:  []string{"a", "b"},
			logs: []string{"dyad-init: phase a ok in ", "dyad-init: phase b ok in "},
		},
		{
			name: "non-critical failure continues",
			phases: []Phase[*[]string]{
				{Name: "a", Run: record("a", boom)},
				{Name: "b", Run: record("b", nil)},
			},
			ran:  []string{"a", "b"},
			logs: []string{"dyad-init: phase a failed after ", "continuing", "err=boom", "dyad-init: phase b ok in "},
		},
		{
			name: "critical failure stops",
			phases: []Phase[*[]string]{
				{Name: "a", Run: record("a", boom), Critical: true},
				{Name: "b", Run: record("b", nil)},
			},
			ran:     []string{"a"},
			wantErr: true,
			logs:    []string{"dyad-init: phase a failed after "},
		},
		{
			name: "panic becomes an error",
			phases: []Phase[*[]string]{
				{Name: "a", Run: func(context.Context, *[]string) error { panic("bug") }, Critical: true},
				{Name: "b", Run: record("b", nil)},
			},
			wantErr: true,
			logs:    []string{"panic: bug"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			var ran []string
			err := Run(context.Background(), slog.New(slog.NewTextHandler(&buf, nil)), tc.phases, &ran)
			if (err != nil) != tc.wantErr {
				t.Errorf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !slices.Equal(ran, tc.ran) {
				t.Errorf("ran %v, want %v", ran, tc.ran)
			}
			for _, l := range tc.logs {
				if !strings.Contains(buf.String(), l) {
					t.Errorf("log lacks %q:\n%s", l, buf.String())
				}
			}
		})
	}
}

func record(name string, err error) func(context.Context, *[]string) error {
	return func(_ context.Context, ran *[]string) error {
		*ran = append(*ran, name)
		return err
	}
}
