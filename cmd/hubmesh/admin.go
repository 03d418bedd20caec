package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/hubmesh/hubmesh"
)

func newLoginCmd() *cobra.Command {
	var (
		f        apiFlags
		o        output
		username string
		stdin    bool
	)
	cmd := &cobra.Command{
		Use:   "login -u USER --password-stdin",
		Short: "Log in and print an API session token (valid one hour) for scripts",
		Long: "Log in with a user name and password (or access token) and print an API session\n" +
			"token, valid for an hour. Scripts put it in HUBMESH_TOKEN for later commands.\n" +
			"Without --password-stdin the password is HUBMESH_PASSWORD. (For `docker login`,\n" +
			"use docker itself: the registry speaks the Docker token protocol.)",
		Example: "  export HUBMESH_TOKEN=$(hubmesh login --server http://node1:5000 -u alice --password-stdin < pw.txt)",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, asJSON, err := f.clientFor(o)
			if err != nil {
				return err
			}
			if username == "" {
				username = c.cred.username
			}
			if username == "" {
				return usageError{fmt.Errorf("login needs -u USER (or HUBMESH_USERNAME)")}
			}
			pw := c.cred.password
			if stdin {
				if pw, err = readPasswordStdin(cmd); err != nil {
					return err
				}
			}
			if pw == "" {
				return usageError{fmt.Errorf("login needs --password-stdin (or HUBMESH_PASSWORD)")}
			}
			c.cred = credentials{} // the body carries them
			var ans map[string]any
			req := map[string]string{"username": username, "password": pw}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/users/login", req, &ans); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), ans)
			}
			tok, _ := ans["token"].(string)
			if tok == "" {
				return fmt.Errorf("the server answered without a token")
			}
			return printName(cmd, tok)
		},
	}
	f.add(cmd)
	addOutputFlags(cmd, &o)
	cmd.Flags().StringVarP(&username, "username", "u", "", "user name (env HUBMESH_USERNAME)")
	cmd.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
	return cmd
}

// auditPageSize is how many events one GET /api/v1/audit asks for.
const auditPageSize = 500

func newAuditCmd() *cobra.Command {
	var (
		after string
		limit int
	)
	cmd := showCmd(&cobra.Command{
		Use:   "audit",
		Short: "Print the audit log of security events, oldest first (administrators only)",
		Args:  exactArgs(0, "no arguments"),
	}, func(*cobra.Command, []string) error {
		if limit < 0 {
			return usageError{fmt.Errorf("--limit %d: want 0 (all) or more", limit)}
		}
		return nil
	}, func(cmd *cobra.Command, c *apiClient, _ []string) (shown, error) {
		q := url.Values{"page_size": {strconv.Itoa(auditPageSize)}}
		if after != "" {
			q.Set("last", after)
		}
		events, err := listAll[hubmesh.AuditEvent](cmd.Context(), c, "/api/v1/audit?"+q.Encode(), limit)
		return shown{events, []string{"ID", "TIME", "ACTION", "ACTOR", "TARGET", "CLIENT", "NODE", "DETAIL"}, func() [][]string {
			rows := make([][]string, len(events))
			for i, e := range events {
				rows[i] = []string{e.ID, when(e.Time), e.Action, orDash(e.Actor), orDash(e.Target), orDash(e.Client), orDash(e.Node), orDash(e.Detail)}
			}
			return rows
		}}, err
	})
	cmd.Flags().StringVar(&after, "after", "", "only events after this event ID")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many events (0: all)")
	return cmd
}

func newSettingsCmd() *cobra.Command {
	return groupCmd("settings", "Show or change the cluster's account settings (administrators only)",
		newSettingsShowCmd(), newSettingsSetCmd())
}

func newSettingsShowCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:   "show",
		Short: "Show the account settings",
		Args:  exactArgs(0, "no arguments"),
	}, nil, func(cmd *cobra.Command, c *apiClient, _ []string) (shown, error) {
		var s hubmesh.Settings
		err := c.do(cmd.Context(), http.MethodGet, "/api/v1/settings", nil, &s)
		return shown{s, []string{"SETTING", "VALUE"}, func() [][]string {
			return [][]string{{"open-signup", strconv.FormatBool(s.OpenSignup)}}
		}}, err
	})
}

func newSettingsSetCmd() *cobra.Command {
	var openSignup bool
	cmd := requestCmd(&cobra.Command{
		Use:     "set --open-signup=true|false",
		Short:   "Change account settings",
		Example: "  hubmesh settings set --open-signup=true   # anyone may create an account",
		Args:    exactArgs(0, "no arguments"),
	}, func(cmd *cobra.Command, _ []string) (apiRequest, error) {
		body := map[string]any{}
		if cmd.Flags().Changed("open-signup") {
			body["open_signup"] = openSignup
		}
		if len(body) == 0 {
			return apiRequest{}, usageError{fmt.Errorf("settings set changes nothing: give --open-signup=true or --open-signup=false")}
		}
		return apiRequest{method: http.MethodPatch, path: "/api/v1/settings", body: body}, nil
	})
	cmd.Flags().BoolVar(&openSignup, "open-signup", false, "let anyone create an account (else only administrators)")
	return cmd
}

func newKeysCmd() *cobra.Command {
	return groupCmd("keys", "Manage the cluster's token signing keys (administrators only)", newKeysRotateCmd())
}

func newKeysRotateCmd() *cobra.Command {
	var (
		f apiFlags
		o output
	)
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Sign new tokens with a new key; tokens signed with the old one stay valid until they expire",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, asJSON, err := f.clientFor(o)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/keys/rotate", nil, &raw); err != nil {
				return err
			}
			if asJSON {
				if len(raw) == 0 {
					raw = json.RawMessage("{}")
				}
				return writeJSON(cmd.OutOrStdout(), raw)
			}
			var ans struct {
				KID string `json:"kid"`
			}
			if json.Unmarshal(raw, &ans) == nil && ans.KID != "" {
				return printName(cmd, ans.KID)
			}
			return nil
		},
	}
	f.add(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}
