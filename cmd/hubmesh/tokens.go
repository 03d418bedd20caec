package main

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hubmesh/hubmesh"
)

// tokenScopes are the scopes of personal access tokens, weakest first.
var tokenScopes = []string{hubmesh.ScopeRead, hubmesh.ScopeWrite, hubmesh.ScopeDelete, hubmesh.ScopeAdmin}

// parseScopes reads --scope values (repeated or comma separated), checks
// each, and returns them without duplicates in their order of strength.
func parseScopes(vals []string) ([]string, error) {
	seen := map[string]bool{}
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			s = strings.ToLower(strings.TrimSpace(s))
			if s == "" {
				continue
			}
			if !slices.Contains(tokenScopes, s) {
				return nil, usageError{fmt.Errorf("--scope %q: want %s", s, strings.Join(tokenScopes, ", "))}
			}
			seen[s] = true
		}
	}
	var out []string
	for _, s := range tokenScopes {
		if seen[s] {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, usageError{fmt.Errorf("--scope: want at least one of %s", strings.Join(tokenScopes, ", "))}
	}
	return out, nil
}

// parseExpiry reads a token lifetime: a Go duration ("36h", "90m"), days
// or weeks ("30d", "2w", "1d12h"), or "never" (also "" and "0"), which
// returns 0.
func parseExpiry(s string) (time.Duration, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "" || s == "0" || s == "never" {
		return 0, nil
	}
	bad := usageError{fmt.Errorf("--expires %q: want a duration such as 30d, 2w, 12h or never", s)}
	var total time.Duration
	rest := s
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}} {
		i := strings.Index(rest, u.suffix)
		if i < 0 {
			continue
		}
		n, err := strconv.ParseUint(rest[:i], 10, 32)
		if err != nil {
			return 0, bad
		}
		total += time.Duration(n) * u.unit
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, bad
		}
		total += d
	}
	if total < time.Second || total > 10*365*24*time.Hour {
		return 0, usageError{fmt.Errorf("--expires %q: want between 1s and 10 years, or never", s)}
	}
	return total, nil
}

// tokenCreateRequest is the body of POST /api/v1/access-tokens.
type tokenCreateRequest struct {
	Label     string   `json:"token_label,omitempty"`
	Scopes    []string `json:"scopes"`
	ExpiresIn int64    `json:"expires_in,omitempty"` // seconds; 0: never
}

// tokenView is an access token as the API shows it (Docker Hub's field
// names); Token, the secret, only in the answer that creates it.
type tokenView struct {
	UUID      string     `json:"uuid"`
	Username  string     `json:"username"`
	Label     string     `json:"token_label"`
	Scopes    []string   `json:"scopes"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	LastUsed  *time.Time `json:"last_used"`
	IsActive  bool       `json:"is_active"`
	Token     string     `json:"token,omitempty"`
}

// whenPtr formats an optional time for a table, with none for nil.
func whenPtr(t *time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return when(*t)
}

func newTokenCmd() *cobra.Command {
	return groupCmd("token", "Manage your personal access tokens (usable as a password, e.g. with docker login)",
		newTokenCreateCmd(), newTokenLsCmd(), newTokenRmCmd())
}

func newTokenCreateCmd() *cobra.Command {
	var (
		f       apiFlags
		o       output
		scopes  []string
		expires string
		label   string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an access token and print its secret (shown only this once)",
		Long: "Create a personal access token for the user of the credentials and print its secret,\n" +
			"which is shown only this once. Scopes cap what the token may do: read (pull), write\n" +
			"(pull, push), delete (also delete), admin (everything the user may do, the API too).",
		Example: "  hubmesh token create --scope read --expires 30d --label ci\n" +
			"  echo \"$(hubmesh token create --scope write)\" | docker login node:5000 -u alice --password-stdin",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := parseScopes(scopes)
			if err != nil {
				return err
			}
			ttl, err := parseExpiry(expires)
			if err != nil {
				return err
			}
			c, asJSON, err := f.clientFor(o)
			if err != nil {
				return err
			}
			req := tokenCreateRequest{Label: label, Scopes: sc, ExpiresIn: int64(ttl / time.Second)}
			var tok tokenView
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/access-tokens", req, &tok); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), tok)
			}
			if tok.Token == "" {
				return fmt.Errorf("the server answered without the token's secret")
			}
			return printName(cmd, tok.Token)
		},
	}
	f.add(cmd)
	addOutputFlags(cmd, &o)
	cmd.Flags().StringSliceVar(&scopes, "scope", []string{hubmesh.ScopeWrite}, "read, write, delete or admin (repeat or separate with commas)")
	cmd.Flags().StringVar(&expires, "expires", "never", "lifetime: 30d, 2w, 12h... or never")
	cmd.Flags().StringVar(&label, "label", "", "a name to recognise the token by")
	return cmd
}

func newTokenLsCmd() *cobra.Command {
	var user string
	cmd := showCmd(&cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List your access tokens (never their secrets)",
		Args:    exactArgs(0, "no arguments"),
	}, nil, func(cmd *cobra.Command, c *apiClient, _ []string) (shown, error) {
		path := "/api/v1/access-tokens"
		if user != "" {
			path += "?username=" + url.QueryEscape(user)
		}
		toks, err := listAll[tokenView](cmd.Context(), c, path, 0)
		return shown{toks, []string{"UUID", "LABEL", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "ACTIVE"}, func() [][]string {
			rows := make([][]string, len(toks))
			for i, t := range toks {
				rows[i] = []string{t.UUID, orDash(t.Label), strings.Join(t.Scopes, ","), when(t.CreatedAt),
					whenPtr(t.ExpiresAt, "never"), whenPtr(t.LastUsed, "-"), yesNo(t.IsActive)}
			}
			return rows
		}}, err
	})
	cmd.Flags().StringVar(&user, "user", "", "list another user's tokens (administrators only)")
	return cmd
}

func newTokenRmCmd() *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:     "rm UUID",
		Aliases: []string{"remove", "revoke", "delete"},
		Short:   "Revoke an access token",
		Args:    exactArgs(1, "one token UUID"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		return apiRequest{method: http.MethodDelete, path: "/api/v1/access-tokens/" + url.PathEscape(args[0])}, nil
	})
}
