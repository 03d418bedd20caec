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

// clientFor is client for a command that prints JSON or a name: it checks
// --format first, and reports whether JSON was asked for.
func (f *apiFlags) clientFor(o output) (*apiClient, bool, error) {
	asJSON, err := o.asJSON()
	if err != nil {
		return nil, false, err
	}
	c, err := f.client()
	return c, asJSON, err
}

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

// apiRequest is the one request of a command that shows no answer.
type apiRequest struct {
	method, path string
	body         any
	// echo prints the first argument once the request succeeds: what a
	// create command made.
	echo bool
}

// requestCmd completes cmd, a command that makes one API request and shows
// no answer: it adds --server, and its RunE has req make the request of the
// arguments and flags (refusing bad ones before the client is made of
// --server), then sends it.
func requestCmd(cmd *cobra.Command, req func(cmd *cobra.Command, args []string) (apiRequest, error)) *cobra.Command {
	var f apiFlags
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := req(cmd, args)
		if err != nil {
			return err
		}
		c, err := f.client()
		if err != nil {
			return err
		}
		if err := c.do(cmd.Context(), r.method, r.path, r.body, nil); err != nil {
			return err
		}
		if r.echo {
			return printName(cmd, args[0])
		}
		return nil
	}
	f.add(cmd)
	return cmd
}

// shown is what a reading command prints: v as JSON, or the table rows
// makes of it under header.
type shown struct {
	v      any
	header []string
	rows   func() [][]string
}

// showCmd completes cmd, a command that reads from the API and prints what
// it read as a table or JSON: it adds --server and the output flags, and
// its RunE runs check (when not nil) to refuse bad arguments and flags
// before the client is made of --server, then read.
func showCmd(cmd *cobra.Command, check func(cmd *cobra.Command, args []string) error,
	read func(cmd *cobra.Command, c *apiClient, args []string) (shown, error)) *cobra.Command {
	var (
		f apiFlags
		o output
	)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if check != nil {
			if err := check(cmd, args); err != nil {
				return err
			}
		}
		c, err := f.client()
		if err != nil {
			return err
		}
		s, err := read(cmd, c, args)
		if err != nil {
			return err
		}
		return show(cmd, o, s.v, s.header, s.rows)
	}
	f.add(cmd)
	addOutputFlags(cmd, &o)
	return cmd
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
	return showCmd(&cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List users (administrators only)",
		Args:    exactArgs(0, "no arguments"),
	}, nil, func(cmd *cobra.Command, c *apiClient, _ []string) (shown, error) {
		us, err := listAll[userView](cmd.Context(), c, "/api/v1/users", 0)
		return shown{us, userHeader, func() [][]string { return userRows(us) }}, err
	})
}

func newUserShowCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:   "show [NAME]",
		Short: "Show a user; without NAME, the one the credentials belong to",
		Args:  rangeArgs(0, 1, "at most one user name"),
	}, nil, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		path := "/api/v1/user"
		if len(args) == 1 {
			path = "/api/v1/users/" + url.PathEscape(args[0])
		}
		var u userView
		err := c.do(cmd.Context(), http.MethodGet, path, nil, &u)
		return shown{u, userHeader, func() [][]string { return userRows([]userView{u}) }}, err
	})
}

func newUserRmCmd() *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete a user, its tokens and every repository in its namespace",
		Args:    exactArgs(1, "one user name"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		return apiRequest{method: http.MethodDelete, path: "/api/v1/users/" + url.PathEscape(args[0])}, nil
	})
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
	short := "Disable a user: every credential of theirs is refused until enabled again"
	if !disable {
		short = "Enable a disabled user"
	}
	return requestCmd(&cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  exactArgs(1, "one user name"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		return apiRequest{method: http.MethodPatch, path: "/api/v1/users/" + url.PathEscape(args[0]), body: userUpdateRequest{Disabled: &disable}}, nil
	})
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
	return requestCmd(&cobra.Command{
		Use:   "create NAME",
		Short: "Create an organization; you become a member of its owners team",
		Args:  exactArgs(1, "one organization name"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		return apiRequest{method: http.MethodPost, path: "/api/v1/orgs", body: map[string]string{"orgname": args[0]}, echo: true}, nil
	})
}

func newOrgLsCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List organizations",
		Args:    exactArgs(0, "no arguments"),
	}, nil, func(cmd *cobra.Command, c *apiClient, _ []string) (shown, error) {
		orgs, err := listAll[orgView](cmd.Context(), c, "/api/v1/orgs", 0)
		return shown{orgs, []string{"ORG", "OWNER", "CREATED"}, func() [][]string {
			rows := make([][]string, len(orgs))
			for i, g := range orgs {
				rows[i] = []string{g.Orgname, orDash(g.Owner), when(g.DateJoined)}
			}
			return rows
		}}, err
	})
}

func newOrgRmCmd() *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete an organization, its teams and every repository in it",
		Args:    exactArgs(1, "one organization name"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		return apiRequest{method: http.MethodDelete, path: "/api/v1/orgs/" + url.PathEscape(args[0])}, nil
	})
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

// teamArg refuses a first argument that is not ORG/TEAM.
func teamArg(_ *cobra.Command, args []string) error {
	_, _, err := splitTeam(args[0])
	return err
}

// grantPath is the API path of the permission that ORG/TEAM REPO (the
// first two arguments) names.
func grantPath(args []string) (string, error) {
	org, team, err := splitTeam(args[0])
	if err != nil {
		return "", err
	}
	repo, err := teamRepo(org, args[1])
	if err != nil {
		return "", err
	}
	return teamPath(org, team) + "/permissions/" + escapePath(repo), nil
}

func newTeamCmd() *cobra.Command {
	return groupCmd("team", "Manage the teams of organizations, their members and repository permissions",
		newTeamCreateCmd(), newTeamLsCmd(), newTeamShowCmd(), newTeamRmCmd(),
		newTeamMemberCmd("add", http.MethodPut, "Add a user to a team"),
		newTeamMemberCmd("remove", http.MethodDelete, "Take a user out of a team"),
		newTeamGrantCmd(), newTeamRevokeCmd())
}

func newTeamCreateCmd() *cobra.Command {
	var desc string
	cmd := requestCmd(&cobra.Command{
		Use:   "create ORG/TEAM",
		Short: "Create a team (organization owners only)",
		Args:  exactArgs(1, "one ORG/TEAM"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		org, team, err := splitTeam(args[0])
		if err != nil {
			return apiRequest{}, err
		}
		body := map[string]string{"name": team}
		if desc != "" {
			body["description"] = desc
		}
		// echo prints ORG/TEAM: splitTeam took exactly that.
		return apiRequest{method: http.MethodPost, path: "/api/v1/orgs/" + url.PathEscape(org) + "/teams", body: body, echo: true}, nil
	})
	cmd.Flags().StringVar(&desc, "description", "", "what the team is for")
	return cmd
}

func newTeamLsCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:     "ls ORG",
		Aliases: []string{"list"},
		Short:   "List the teams of an organization",
		Args:    exactArgs(1, "one organization name"),
	}, nil, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		teams, err := listAll[hubmesh.Team](cmd.Context(), c, "/api/v1/orgs/"+url.PathEscape(args[0])+"/teams", 0)
		return shown{teams, []string{"TEAM", "MEMBERS", "DESCRIPTION"}, func() [][]string {
			rows := make([][]string, len(teams))
			for i, tm := range teams {
				rows[i] = []string{args[0] + "/" + tm.Name, orDash(strings.Join(tm.Members, ",")), orDash(tm.Description)}
			}
			return rows
		}}, err
	})
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
	return showCmd(&cobra.Command{
		Use:   "show ORG/TEAM",
		Short: "Show a team: its members and the repositories it has permissions on",
		Args:  exactArgs(1, "one ORG/TEAM"),
	}, teamArg, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		org, team, _ := splitTeam(args[0])
		var d teamDetail
		if err := c.do(cmd.Context(), http.MethodGet, teamPath(org, team), nil, &d.Team); err != nil {
			return shown{}, err
		}
		var err error
		d.Permissions, err = listAll[grantView](cmd.Context(), c, teamPath(org, team)+"/permissions", 0)
		return shown{d, []string{"KIND", "NAME", "PERMISSION"}, func() [][]string {
			var rows [][]string
			for _, m := range d.Members {
				rows = append(rows, []string{"member", m, "-"})
			}
			for _, g := range d.Permissions {
				rows = append(rows, []string{"repository", g.Repository, g.Permission.String()})
			}
			return rows
		}}, err
	})
}

func newTeamRmCmd() *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:     "rm ORG/TEAM",
		Aliases: []string{"delete"},
		Short:   "Delete a team (not the owners team)",
		Args:    exactArgs(1, "one ORG/TEAM"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		org, team, err := splitTeam(args[0])
		return apiRequest{method: http.MethodDelete, path: teamPath(org, team)}, err
	})
}

func newTeamMemberCmd(verb, method, short string) *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:   verb + " ORG/TEAM USER",
		Short: short,
		Args:  exactArgs(2, "ORG/TEAM and a user name"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		org, team, err := splitTeam(args[0])
		return apiRequest{method: method, path: teamPath(org, team) + "/members/" + url.PathEscape(args[1])}, err
	})
}

func newTeamGrantCmd() *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:   "grant ORG/TEAM REPO read|write|admin",
		Short: "Give a team a permission on a repository of its organization",
		Long: "Give a team a permission on one repository of its organization: read (pull),\n" +
			"write (pull and push) or admin (also delete and settings). REPO is ORG/NAME or NAME.",
		Example: "  hubmesh team grant acme/dev acme/api write",
		Args:    exactArgs(3, "ORG/TEAM, a repository and a permission"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		path, err := grantPath(args)
		if err != nil {
			return apiRequest{}, err
		}
		perm, err := hubmesh.ParsePermission(args[2])
		if err != nil || perm == hubmesh.PermNone {
			return apiRequest{}, usageError{fmt.Errorf("permission %q: want read, write or admin (team revoke takes one away)", args[2])}
		}
		return apiRequest{method: http.MethodPut, path: path, body: map[string]string{"permission": perm.String()}}, nil
	})
}

func newTeamRevokeCmd() *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:   "revoke ORG/TEAM REPO",
		Short: "Take away a team's permission on a repository",
		Args:  exactArgs(2, "ORG/TEAM and a repository"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		path, err := grantPath(args)
		return apiRequest{method: http.MethodDelete, path: path}, err
	})
}
