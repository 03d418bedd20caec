package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hubmesh/hubmesh"
)

// apiFlags are the flags every API command has: --server.
type apiFlags struct{ server string }

func (f *apiFlags) add(cmd *cobra.Command) { addServerFlag(cmd, &f.server) }

func (f *apiFlags) client() (*apiClient, error) { return newAPIClient(f.server) }

// maxListPages bounds how many pages a listing follows.
const maxListPages = 10000

// listAll GETs a listing and every further page its "next" links name
// (Docker Hub's {"count","next","previous","results"}), up to limit items
// (0: all); a bare JSON array is one page.
func listAll[T any](ctx context.Context, c *apiClient, path string, limit int) ([]T, error) {
	var all []T
	for range maxListPages {
		var raw json.RawMessage
		if err := c.do(ctx, http.MethodGet, path, nil, &raw); err != nil {
			return nil, err
		}
		var page []T
		if err := decodeList(raw, &page); err != nil {
			return nil, fmt.Errorf("GET %s: bad answer: %w", path, err)
		}
		all = append(all, page...)
		if limit > 0 && len(all) >= limit {
			return all[:limit], nil
		}
		next, err := nextPage(raw)
		if err != nil {
			return nil, fmt.Errorf("GET %s: bad next page: %w", path, err)
		}
		if next == "" || len(page) == 0 {
			return all, nil
		}
		path = next
	}
	return nil, fmt.Errorf("GET %s: more than %d pages", path, maxListPages)
}

// nextPage returns the path and query of a page's "next" link, or "".
// The link's host is not used: the node may name itself differently than
// the client reaches it.
func nextPage(raw []byte) (string, error) {
	var p struct {
		Next *string `json:"next"`
	}
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &p) != nil || p.Next == nil || *p.Next == "" {
		return "", nil
	}
	u, err := url.Parse(*p.Next)
	if err != nil {
		return "", err
	}
	return u.RequestURI(), nil
}

// printName prints what a create command made, like `docker volume create`.
func printName(cmd *cobra.Command, name string) error {
	_, err := fmt.Fprintln(cmd.OutOrStdout(), name)
	return err
}

func newUserCmd() *cobra.Command {
	return groupCmd("user", "Manage user accounts",
		newUserCreateCmd(), newUserLsCmd(), newUserShowCmd(), newUserRmCmd(), newUserPasswdCmd(),
		newUserDisableCmd("disable", true), newUserDisableCmd("enable", false))
}

// userCreateRequest is the body of POST /api/v1/users.
type userCreateRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Email    string `json:"email,omitempty"`
	IsAdmin  bool   `json:"is_admin,omitempty"`
}

func newUserCreateCmd() *cobra.Command {
	var (
		f        apiFlags
		stdin    bool
		admin    bool
		email    string
		jsonFlag output
	)
	cmd := &cobra.Command{
		Use:   "create NAME --password-stdin",
		Short: "Create a user (an administrator's command, unless sign-up is open)",
		Example: "  printf '%s' \"$PW\" | hubmesh user create alice --password-stdin --email alice@example.com\n" +
			"  hubmesh user create root2 --admin --password-stdin < pw.txt",
		Args: exactArgs(1, "one user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !stdin {
				return usageError{fmt.Errorf("user create needs --password-stdin (the password is read from standard input)")}
			}
			asJSON, err := jsonFlag.asJSON()
			if err != nil {
				return err
			}
			pw, err := readPasswordStdin(cmd)
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			var u userView
			req := userCreateRequest{Username: args[0], Password: pw, Email: email, IsAdmin: admin}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/users", req, &u); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), u)
			}
			return printName(cmd, args[0])
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
	cmd.Flags().BoolVar(&admin, "admin", false, "make the user a site administrator")
	cmd.Flags().StringVar(&email, "email", "", "e-mail address of the user")
	addOutputFlags(cmd, &jsonFlag)
	return cmd
}

// userView is a user as the API shows it (Docker Hub's field names).
type userView struct {
	Username   string    `json:"username"`
	Email      string    `json:"email,omitempty"`
	IsAdmin    bool      `json:"is_admin"`
	IsActive   *bool     `json:"is_active,omitempty"` // absent in the public view
	DateJoined time.Time `json:"date_joined"`
	Type       string    `json:"type,omitempty"`
	Orgs       []string  `json:"orgs,omitempty"`
}

func userRows(us []userView) [][]string {
	rows := make([][]string, len(us))
	for i, u := range us {
		active := "-"
		if u.IsActive != nil {
			active = yesNo(*u.IsActive)
		}
		rows[i] = []string{u.Username, yesNo(u.IsAdmin), active, orDash(u.Email), orDash(strings.Join(u.Orgs, ",")), when(u.DateJoined)}
	}
	return rows
}

var userHeader = []string{"USERNAME", "ADMIN", "ACTIVE", "EMAIL", "ORGS", "JOINED"}

func newUserLsCmd() *cobra.Command {
	var (
		f apiFlags
		o output
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List users (administrators only)",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			us, err := listAll[userView](cmd.Context(), c, "/api/v1/users", 0)
			if err != nil {
				return err
			}
			return show(cmd, o, us, userHeader, func() [][]string { return userRows(us) })
		},
	}
	f.add(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}

func newUserShowCmd() *cobra.Command {
	var (
		f apiFlags
		o output
	)
	cmd := &cobra.Command{
		Use:   "show [NAME]",
		Short: "Show a user; without NAME, the one the credentials belong to",
		Args:  rangeArgs(0, 1, "at most one user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			path := "/api/v1/user"
			if len(args) == 1 {
				path = "/api/v1/users/" + url.PathEscape(args[0])
			}
			var u userView
			if err := c.do(cmd.Context(), http.MethodGet, path, nil, &u); err != nil {
				return err
			}
			return show(cmd, o, u, userHeader, func() [][]string { return userRows([]userView{u}) })
		},
	}
	f.add(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}

func newUserRmCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete a user, its tokens and every repository in its namespace",
		Args:    exactArgs(1, "one user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodDelete, "/api/v1/users/"+url.PathEscape(args[0]), nil, nil)
		},
	}
	f.add(cmd)
	return cmd
}

// userUpdateRequest is the body of PATCH /api/v1/users/{name}.
type userUpdateRequest struct {
	Password        string `json:"password,omitempty"`
	CurrentPassword string `json:"current_password,omitempty"`
	Disabled        *bool  `json:"disabled,omitempty"`
}

func newUserPasswdCmd() *cobra.Command {
	var (
		f     apiFlags
		stdin bool
	)
	cmd := &cobra.Command{
		Use:   "passwd [NAME] --password-stdin",
		Short: "Change a password: your own (the current one is HUBMESH_PASSWORD), or any user's as an administrator",
		Example: "  printf '%s' \"$NEW\" | HUBMESH_USERNAME=alice HUBMESH_PASSWORD=\"$OLD\" hubmesh user passwd --password-stdin\n" +
			"  hubmesh user passwd bob --password-stdin < new.txt   # as an administrator",
		Args: rangeArgs(0, 1, "at most one user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !stdin {
				return usageError{fmt.Errorf("user passwd needs --password-stdin (the new password is read from standard input)")}
			}
			pw, err := readPasswordStdin(cmd)
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			name := c.cred.username
			if len(args) == 1 {
				name = args[0]
			}
			if name == "" {
				var me userView
				if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/user", nil, &me); err != nil {
					return err
				}
				name = me.Username
			}
			req := userUpdateRequest{Password: pw}
			// Changing one's own password needs the current one, unless one
			// is an administrator; with password credentials, that is it.
			if name == c.cred.username && c.cred.token == "" {
				req.CurrentPassword = c.cred.password
			}
			return c.do(cmd.Context(), http.MethodPatch, "/api/v1/users/"+url.PathEscape(name), req, nil)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&stdin, "password-stdin", false, "read the new password from standard input")
	return cmd
}

func newUserDisableCmd(verb string, disable bool) *cobra.Command {
	var f apiFlags
	short := "Disable a user: every credential of theirs is refused until enabled again"
	if !disable {
		short = "Enable a disabled user"
	}
	cmd := &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  exactArgs(1, "one user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodPatch, "/api/v1/users/"+url.PathEscape(args[0]), userUpdateRequest{Disabled: &disable}, nil)
		},
	}
	f.add(cmd)
	return cmd
}

// orgView is an organization as the API shows it.
type orgView struct {
	Orgname    string    `json:"orgname"`
	DateJoined time.Time `json:"date_joined"`
	Owner      string    `json:"owner,omitempty"`
	Type       string    `json:"type,omitempty"`
}

func newOrgCmd() *cobra.Command {
	return groupCmd("org", "Manage organizations", newOrgCreateCmd(), newOrgLsCmd(), newOrgRmCmd())
}

func newOrgCreateCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an organization; you become a member of its owners team",
		Args:  exactArgs(1, "one organization name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/orgs", map[string]string{"orgname": args[0]}, nil); err != nil {
				return err
			}
			return printName(cmd, args[0])
		},
	}
	f.add(cmd)
	return cmd
}

func newOrgLsCmd() *cobra.Command {
	var (
		f apiFlags
		o output
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List organizations",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			orgs, err := listAll[orgView](cmd.Context(), c, "/api/v1/orgs", 0)
			if err != nil {
				return err
			}
			return show(cmd, o, orgs, []string{"ORG", "OWNER", "CREATED"}, func() [][]string {
				rows := make([][]string, len(orgs))
				for i, g := range orgs {
					rows[i] = []string{g.Orgname, orDash(g.Owner), when(g.DateJoined)}
				}
				return rows
			})
		},
	}
	f.add(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}

func newOrgRmCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete an organization, its teams and every repository in it",
		Args:    exactArgs(1, "one organization name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodDelete, "/api/v1/orgs/"+url.PathEscape(args[0]), nil, nil)
		},
	}
	f.add(cmd)
	return cmd
}

// splitTeam reads ORG/TEAM.
func splitTeam(s string) (org, team string, err error) {
	org, team, ok := strings.Cut(s, "/")
	if !ok || org == "" || team == "" || strings.Contains(team, "/") {
		return "", "", usageError{fmt.Errorf("team %q: want ORG/TEAM", s)}
	}
	return org, team, nil
}

// teamPath is the API path of a team.
func teamPath(org, team string) string {
	return "/api/v1/orgs/" + url.PathEscape(org) + "/teams/" + url.PathEscape(team)
}

// teamRepo is the repository a grant names: REPO as given when it has a
// namespace, else ORG/REPO.
func teamRepo(org, repo string) (string, error) {
	if repo == "" || strings.HasPrefix(repo, "/") || strings.HasSuffix(repo, "/") {
		return "", usageError{fmt.Errorf("repository %q: want NAME or ORG/NAME", repo)}
	}
	if !strings.Contains(repo, "/") {
		return org + "/" + repo, nil
	}
	return repo, nil
}

func newTeamCmd() *cobra.Command {
	return groupCmd("team", "Manage the teams of organizations, their members and repository permissions",
		newTeamCreateCmd(), newTeamLsCmd(), newTeamShowCmd(), newTeamRmCmd(),
		newTeamMemberCmd("add", http.MethodPut, "Add a user to a team"),
		newTeamMemberCmd("remove", http.MethodDelete, "Take a user out of a team"),
		newTeamGrantCmd(), newTeamRevokeCmd())
}

func newTeamCreateCmd() *cobra.Command {
	var (
		f    apiFlags
		desc string
	)
	cmd := &cobra.Command{
		Use:   "create ORG/TEAM",
		Short: "Create a team (organization owners only)",
		Args:  exactArgs(1, "one ORG/TEAM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, team, err := splitTeam(args[0])
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			body := map[string]string{"name": team}
			if desc != "" {
				body["description"] = desc
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/orgs/"+url.PathEscape(org)+"/teams", body, nil); err != nil {
				return err
			}
			return printName(cmd, org+"/"+team)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&desc, "description", "", "what the team is for")
	return cmd
}

func newTeamLsCmd() *cobra.Command {
	var (
		f apiFlags
		o output
	)
	cmd := &cobra.Command{
		Use:     "ls ORG",
		Aliases: []string{"list"},
		Short:   "List the teams of an organization",
		Args:    exactArgs(1, "one organization name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			teams, err := listAll[hubmesh.Team](cmd.Context(), c, "/api/v1/orgs/"+url.PathEscape(args[0])+"/teams", 0)
			if err != nil {
				return err
			}
			return show(cmd, o, teams, []string{"TEAM", "MEMBERS", "DESCRIPTION"}, func() [][]string {
				rows := make([][]string, len(teams))
				for i, tm := range teams {
					rows[i] = []string{args[0] + "/" + tm.Name, orDash(strings.Join(tm.Members, ",")), orDash(tm.Description)}
				}
				return rows
			})
		},
	}
	f.add(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}

// teamDetail is what `team show` prints.
type teamDetail struct {
	hubmesh.Team
	Permissions []grantView `json:"permissions"`
}

// grantView is one repository permission of a team.
type grantView struct {
	Repository string             `json:"repository"`
	Permission hubmesh.Permission `json:"permission"`
}

func newTeamShowCmd() *cobra.Command {
	var (
		f apiFlags
		o output
	)
	cmd := &cobra.Command{
		Use:   "show ORG/TEAM",
		Short: "Show a team: its members and the repositories it has permissions on",
		Args:  exactArgs(1, "one ORG/TEAM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, team, err := splitTeam(args[0])
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			var d teamDetail
			if err := c.do(cmd.Context(), http.MethodGet, teamPath(org, team), nil, &d.Team); err != nil {
				return err
			}
			if d.Permissions, err = listAll[grantView](cmd.Context(), c, teamPath(org, team)+"/permissions", 0); err != nil {
				return err
			}
			return show(cmd, o, d, []string{"KIND", "NAME", "PERMISSION"}, func() [][]string {
				var rows [][]string
				for _, m := range d.Members {
					rows = append(rows, []string{"member", m, "-"})
				}
				for _, g := range d.Permissions {
					rows = append(rows, []string{"repository", g.Repository, g.Permission.String()})
				}
				return rows
			})
		},
	}
	f.add(cmd)
	addOutputFlags(cmd, &o)
	return cmd
}

func newTeamRmCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:     "rm ORG/TEAM",
		Aliases: []string{"delete"},
		Short:   "Delete a team (not the owners team)",
		Args:    exactArgs(1, "one ORG/TEAM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, team, err := splitTeam(args[0])
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodDelete, teamPath(org, team), nil, nil)
		},
	}
	f.add(cmd)
	return cmd
}

func newTeamMemberCmd(verb, method, short string) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   verb + " ORG/TEAM USER",
		Short: short,
		Args:  exactArgs(2, "ORG/TEAM and a user name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, team, err := splitTeam(args[0])
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), method, teamPath(org, team)+"/members/"+url.PathEscape(args[1]), nil, nil)
		},
	}
	f.add(cmd)
	return cmd
}

func newTeamGrantCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "grant ORG/TEAM REPO read|write|admin",
		Short: "Give a team a permission on a repository of its organization",
		Long: "Give a team a permission on one repository of its organization: read (pull),\n" +
			"write (pull and push) or admin (also delete and settings). REPO is ORG/NAME or NAME.",
		Example: "  hubmesh team grant acme/dev acme/api write",
		Args:    exactArgs(3, "ORG/TEAM, a repository and a permission"),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, team, err := splitTeam(args[0])
			if err != nil {
				return err
			}
			repo, err := teamRepo(org, args[1])
			if err != nil {
				return err
			}
			perm, err := hubmesh.ParsePermission(args[2])
			if err != nil || perm == hubmesh.PermNone {
				return usageError{fmt.Errorf("permission %q: want read, write or admin (team revoke takes one away)", args[2])}
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodPut, teamPath(org, team)+"/permissions/"+escapePath(repo), map[string]string{"permission": perm.String()}, nil)
		},
	}
	f.add(cmd)
	return cmd
}

func newTeamRevokeCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "revoke ORG/TEAM REPO",
		Short: "Take away a team's permission on a repository",
		Args:  exactArgs(2, "ORG/TEAM and a repository"),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, team, err := splitTeam(args[0])
			if err != nil {
				return err
			}
			repo, err := teamRepo(org, args[1])
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodDelete, teamPath(org, team)+"/permissions/"+escapePath(repo), nil, nil)
		},
	}
	f.add(cmd)
	return cmd
}
