package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// output is how a command prints what it read: a table for people, or
// JSON for scripts (--json, or --format json).
type output struct {
	json   bool
	format string
}

// addOutputFlags adds --json and --format to cmd, and checks --format
// before the command runs.
func addOutputFlags(cmd *cobra.Command, o *output) {
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON (same as --format json)")
	cmd.Flags().StringVar(&o.format, "format", "table", "output format: table or json")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		_, err := o.asJSON()
		return err
	}
}

// asJSON reports whether JSON was asked for; an unknown --format is a
// usage error.
func (o output) asJSON() (bool, error) {
	switch strings.ToLower(o.format) {
	case "", "table":
		return o.json, nil
	case "json":
		return true, nil
	}
	return false, usageError{fmt.Errorf("--format %q: want table or json", o.format)}
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeTable prints rows under header, columns aligned.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for i, c := range r {
			r[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// show prints v as JSON, or as the table that rows makes of it.
func show(cmd *cobra.Command, o output, v any, header []string, rows func() [][]string) error {
	j, err := o.asJSON()
	if err != nil {
		return err
	}
	if j {
		return writeJSON(cmd.OutOrStdout(), v)
	}
	return writeTable(cmd.OutOrStdout(), header, rows())
}

// decodeList reads a list answer: a JSON array, or an object holding one
// (Docker Hub's {"count":..,"results":[...]}, or {"users":[...]}).
func decodeList(b []byte, out any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return nil
	}
	if b[0] == '[' {
		return json.Unmarshal(b, out)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return err
	}
	if r, ok := obj["results"]; ok {
		return decodeList(r, out)
	}
	var arrays []json.RawMessage
	for _, v := range obj {
		if v = bytes.TrimSpace(v); len(v) > 0 && v[0] == '[' {
			arrays = append(arrays, v)
		}
	}
	if len(arrays) != 1 {
		return fmt.Errorf("want a list, got an object with %d lists", len(arrays))
	}
	return json.Unmarshal(arrays[0], out)
}

// when formats a time for a table: RFC 3339 in UTC, or "-" for none.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// yesNo formats a flag for a table.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// orDash is s, or "-" when s is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// escapePath escapes each segment of a slash-separated name, so that
// "acme/api" stays two path segments.
func escapePath(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// exactArgs is cobra.ExactArgs whose error is a usage error naming what
// the arguments are.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %s, got %d argument(s); see '%s --help'", cmd.CommandPath(), what, len(args), cmd.CommandPath())}
		}
		return nil
	}
}

// rangeArgs is exactArgs for min..max arguments.
func rangeArgs(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usageError{fmt.Errorf("%s takes %s, got %d argument(s); see '%s --help'", cmd.CommandPath(), what, len(args), cmd.CommandPath())}
		}
		return nil
	}
}

// readPasswordStdin reads a password from the command's standard input
// the way `docker login --password-stdin` does: all of it, less one
// trailing newline (\n or \r\n).
func readPasswordStdin(cmd *cobra.Command) (string, error) {
	b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 4096+1))
	if err != nil {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	if len(b) > 4096 {
		return "", usageError{fmt.Errorf("password on stdin is longer than 4096 bytes")}
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", usageError{fmt.Errorf("no password on stdin")}
	}
	return pw, nil
}

// groupCmd is a command that only holds subcommands.
func groupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q; see '%s --help'", args[0], cmd.CommandPath(), cmd.CommandPath())}
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}
