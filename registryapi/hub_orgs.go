package registryapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hubmesh/hubmesh"
)

// orgView is an organization. Owner is shown to its members only.
type orgView struct {
	Orgname    string    `json:"orgname"`
	DateJoined time.Time `json:"date_joined"`
	Owner      string    `json:"owner,omitempty"`
	Type       string    `json:"type"`
}

// teamView is a team of an organization.
type teamView struct {
	Org         string   `json:"org"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Members     []string `json:"members"`
	MemberCount int      `json:"member_count"`
}

func viewTeam(t hubmesh.Team) teamView {
	m := t.Members
	if m == nil {
		m = []string{}
	}
	return teamView{Org: t.Org, Name: t.Name, Description: t.Description, Members: m, MemberCount: len(m)}
}

// grantView is one repository permission of a team.
type grantView struct {
	Repository string             `json:"repository"`
	Permission hubmesh.Permission `json:"permission"`
}

func orgError(org string, err error) error {
	if errors.Is(err, hubmesh.ErrNotFound) {
		return &apiError{code: codeNotFound, message: fmt.Sprintf("organization %q not found", truncate(org, 60)), cause: err}
	}
	return err
}

func teamError(org, team string, err error) error {
	if errors.Is(err, hubmesh.ErrNotFound) {
		return &apiError{code: codeNotFound, message: fmt.Sprintf("team %q of %q not found", truncate(team, 60), truncate(org, 60)), cause: err}
	}
	return err
}

// orgRole tells whether id is a member (in any team) and an owner of org;
// site admins are both. A missing org is a 404.
func (h *Hub) orgRole(ctx context.Context, id identity, org string) (member, owner bool, err error) {
	if _, err := h.accounts.Org(ctx, org); err != nil {
		return false, false, orgError(org, err)
	}
	if id.admin {
		return true, true, nil
	}
	t, err := h.accounts.Team(ctx, org, hubmesh.OwnersTeam)
	if err != nil && !errors.Is(err, hubmesh.ErrNotFound) {
		return false, false, err
	}
	if slices.Contains(t.Members, id.user) {
		return true, true, nil
	}
	orgs, err := h.accounts.OrgsOf(ctx, id.user)
	if err != nil {
		return false, false, err
	}
	return slices.Contains(orgs, org), false, nil
}

// needOrgMember fails unless id is a member of org.
func (h *Hub) needOrgMember(ctx context.Context, id identity, org string) error {
	member, _, err := h.orgRole(ctx, id, org)
	if err != nil {
		return err
	}
	if !member {
		return newError(codeDenied, "only members of %s may see this", org)
	}
	return nil
}

// needOrgOwner fails unless id is an owner of org.
func (h *Hub) needOrgOwner(ctx context.Context, id identity, org string) error {
	_, owner, err := h.orgRole(ctx, id, org)
	if err != nil {
		return err
	}
	if !owner {
		return newError(codeDenied, "only owners of %s may do this", org)
	}
	return nil
}

// listOrgs serves GET /api/v1/orgs: every organization for site admins,
// the user's own for others.
func (h *Hub) listOrgs(w http.ResponseWriter, r *http.Request, id identity) error {
	ctx := r.Context()
	p, err := pageRequest(r)
	if err != nil {
		return err
	}
	var orgs []hubmesh.Org
	more := false
	if id.admin {
		orgs, more, err = fetchPage(p, func(p hubmesh.Page) ([]hubmesh.Org, error) { return h.accounts.Orgs(ctx, p) })
		if err != nil {
			return err
		}
	} else {
		names, err := h.accounts.OrgsOf(ctx, id.user)
		if err != nil {
			return err
		}
		slices.Sort(names)
		for _, n := range names {
			if n <= p.Last {
				continue
			}
			if len(orgs) == p.N {
				more = true
				break
			}
			o, err := h.accounts.Org(ctx, n)
			if errors.Is(err, hubmesh.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			orgs = append(orgs, o)
		}
	}
	out := make([]orgView, 0, len(orgs))
	for _, o := range orgs {
		out = append(out, orgView{Orgname: o.Name, DateJoined: o.Created, Owner: o.Owner, Type: "Organization"})
	}
	last := ""
	if len(orgs) > 0 {
		last = orgs[len(orgs)-1].Name
	}
	return writePage(w, r, p, out, more, last)
}

// createOrg serves POST /api/v1/orgs {orgname}: the caller becomes its
// first owner (a site admin may name another owner).
func (h *Hub) createOrg(w http.ResponseWriter, r *http.Request, id identity) error {
	var req struct {
		Orgname string `json:"orgname"`
		Owner   string `json:"owner"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := checkAccountName("organization", req.Orgname); err != nil {
		return err
	}
	owner := id.user
	if req.Owner != "" && req.Owner != id.user {
		if !id.admin {
			return newError(codeDenied, "only site administrators may create an organization for someone else")
		}
		owner = req.Owner
	}
	o := hubmesh.Org{Name: req.Orgname, Created: h.auth.now().UTC(), Owner: owner}
	if err := h.accounts.CreateOrg(r.Context(), o); err != nil {
		if errors.Is(err, hubmesh.ErrExists) {
			return &apiError{code: codeConflict, message: fmt.Sprintf("the name %q is taken", o.Name), cause: err}
		}
		return err
	}
	h.audit(r, id, "org.create", o.Name, "owner="+owner)
	return writeJSON(w, http.StatusCreated, "application/json", orgView{Orgname: o.Name, DateJoined: o.Created, Owner: o.Owner, Type: "Organization"})
}

// getOrg serves GET /api/v1/orgs/{org}.
func (h *Hub) getOrg(w http.ResponseWriter, r *http.Request, id identity) error {
	org := r.PathValue("org")
	o, err := h.accounts.Org(r.Context(), org)
	if err != nil {
		return orgError(org, err)
	}
	v := orgView{Orgname: o.Name, DateJoined: o.Created, Type: "Organization"}
	member, _, err := h.orgRole(r.Context(), id, org)
	if err != nil {
		return err
	}
	if member {
		v.Owner = o.Owner
	}
	return writeJSON(w, http.StatusOK, "application/json", v)
}

// deleteOrg serves DELETE /api/v1/orgs/{org} (owners): its teams, grants
// and repositories go with it.
func (h *Hub) deleteOrg(w http.ResponseWriter, r *http.Request, id identity) error {
	org := r.PathValue("org")
	if err := h.needOrgOwner(r.Context(), id, org); err != nil {
		return err
	}
	if err := h.accounts.DeleteOrg(r.Context(), org); err != nil {
		return orgError(org, err)
	}
	h.audit(r, id, "org.delete", org, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listTeams serves GET /api/v1/orgs/{org}/teams (members).
func (h *Hub) listTeams(w http.ResponseWriter, r *http.Request, id identity) error {
	org := r.PathValue("org")
	if err := h.needOrgMember(r.Context(), id, org); err != nil {
		return err
	}
	teams, err := h.accounts.Teams(r.Context(), org)
	if err != nil {
		return orgError(org, err)
	}
	out := make([]teamView, 0, len(teams))
	for _, t := range teams {
		out = append(out, viewTeam(t))
	}
	return writePage(w, r, hubmesh.Page{N: len(out)}, out, false, "")
}

// createTeam serves POST /api/v1/orgs/{org}/teams {name, description}
// (owners).
func (h *Hub) createTeam(w http.ResponseWriter, r *http.Request, id identity) error {
	org := r.PathValue("org")
	var req struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if !teamNameRE.MatchString(req.Name) {
		return newError(codeBadRequest, "team name %q is invalid: 1 to 30 letters, digits, '_' and '-'", truncate(req.Name, 60))
	}
	if len(req.Description) > 1000 {
		return newError(codeBadRequest, "description is longer than 1000 bytes")
	}
	if err := h.needOrgOwner(r.Context(), id, org); err != nil {
		return err
	}
	t := hubmesh.Team{Org: org, Name: req.Name, Description: req.Description}
	if err := h.accounts.CreateTeam(r.Context(), t); err != nil {
		if errors.Is(err, hubmesh.ErrExists) {
			return &apiError{code: codeConflict, message: fmt.Sprintf("team %q exists", t.Name), cause: err}
		}
		return orgError(org, err)
	}
	h.audit(r, id, "team.create", org+"/"+t.Name, "")
	return writeJSON(w, http.StatusCreated, "application/json", viewTeam(t))
}

// team loads a team for a member of its org.
func (h *Hub) team(r *http.Request, id identity) (hubmesh.Team, error) {
	org, name := r.PathValue("org"), r.PathValue("team")
	if err := h.needOrgMember(r.Context(), id, org); err != nil {
		return hubmesh.Team{}, err
	}
	t, err := h.accounts.Team(r.Context(), org, name)
	if err != nil {
		return hubmesh.Team{}, teamError(org, name, err)
	}
	return t, nil
}

// getTeam serves GET /api/v1/orgs/{org}/teams/{team} (members).
func (h *Hub) getTeam(w http.ResponseWriter, r *http.Request, id identity) error {
	t, err := h.team(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", viewTeam(t))
}

// deleteTeam serves DELETE /api/v1/orgs/{org}/teams/{team} (owners); the
// owners team cannot be deleted.
func (h *Hub) deleteTeam(w http.ResponseWriter, r *http.Request, id identity) error {
	org, team := r.PathValue("org"), r.PathValue("team")
	if err := h.needOrgOwner(r.Context(), id, org); err != nil {
		return err
	}
	if team == hubmesh.OwnersTeam {
		return newError(codeBadRequest, "the owners team cannot be deleted")
	}
	if err := h.accounts.DeleteTeam(r.Context(), org, team); err != nil {
		return teamError(org, team, err)
	}
	h.audit(r, id, "team.delete", org+"/"+team, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type memberView struct {
	Username string `json:"username"`
}

// listMembers serves GET /api/v1/orgs/{org}/teams/{team}/members.
func (h *Hub) listMembers(w http.ResponseWriter, r *http.Request, id identity) error {
	t, err := h.team(r, id)
	if err != nil {
		return err
	}
	out := make([]memberView, 0, len(t.Members))
	for _, m := range t.Members {
		out = append(out, memberView{m})
	}
	return writePage(w, r, hubmesh.Page{N: len(out)}, out, false, "")
}

// getMember serves GET /api/v1/orgs/{org}/teams/{team}/members/{user}: 200
// if the user is in the team, else 404.
func (h *Hub) getMember(w http.ResponseWriter, r *http.Request, id identity) error {
	t, err := h.team(r, id)
	if err != nil {
		return err
	}
	user := r.PathValue("user")
	if !slices.Contains(t.Members, user) {
		return notFound("%q is not a member of team %s", truncate(user, 60), t.Name)
	}
	return writeJSON(w, http.StatusOK, "application/json", memberView{user})
}

// addMember serves PUT /api/v1/orgs/{org}/teams/{team}/members/{user}
// (owners).
func (h *Hub) addMember(w http.ResponseWriter, r *http.Request, id identity) error {
	org, team, user := r.PathValue("org"), r.PathValue("team"), r.PathValue("user")
	if err := h.needOrgOwner(r.Context(), id, org); err != nil {
		return err
	}
	if _, err := h.accounts.User(r.Context(), user); err != nil {
		return userError(user, err)
	}
	if err := h.accounts.AddTeamMember(r.Context(), org, team, user); err != nil {
		return teamError(org, team, err)
	}
	h.audit(r, id, "team.member.add", org+"/"+team, "user="+user)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeMember serves DELETE /api/v1/orgs/{org}/teams/{team}/members/{user}
// (owners; the last owner cannot leave).
func (h *Hub) removeMember(w http.ResponseWriter, r *http.Request, id identity) error {
	org, team, user := r.PathValue("org"), r.PathValue("team"), r.PathValue("user")
	if err := h.needOrgOwner(r.Context(), id, org); err != nil {
		return err
	}
	if err := h.accounts.RemoveTeamMember(r.Context(), org, team, user); err != nil {
		return teamError(org, team, err)
	}
	h.audit(r, id, "team.member.remove", org+"/"+team, "user="+user)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listGrants serves GET /api/v1/orgs/{org}/teams/{team}/permissions.
func (h *Hub) listGrants(w http.ResponseWriter, r *http.Request, id identity) error {
	t, err := h.team(r, id)
	if err != nil {
		return err
	}
	perms, err := h.accounts.TeamPermissions(r.Context(), t.Org, t.Name)
	if err != nil {
		return teamError(t.Org, t.Name, err)
	}
	out := make([]grantView, 0, len(perms))
	for repo, p := range perms {
		out = append(out, grantView{repo, p})
	}
	slices.SortFunc(out, func(a, b grantView) int { return strings.Compare(a.Repository, b.Repository) })
	return writePage(w, r, hubmesh.Page{N: len(out)}, out, false, "")
}

// grantRepo reads the repository of a permissions URL: the full name
// ("acme/api") or the name within the org ("api").
func grantRepo(r *http.Request) (org, team, repo string, err error) {
	org, team, repo = r.PathValue("org"), r.PathValue("team"), r.PathValue("repo")
	if !strings.Contains(repo, "/") {
		repo = org + "/" + repo
	}
	if !validName(repo) || hubmesh.RepoOf(repo) != org {
		return "", "", "", newError(codeNameInvalid, "repository %q is not a repository name of %s", truncate(repo, 300), truncate(org, 60))
	}
	return org, team, repo, nil
}

// setGrant serves PUT /api/v1/orgs/{org}/teams/{team}/permissions/{repo}
// {"permission":"read|write|admin"} (owners).
func (h *Hub) setGrant(w http.ResponseWriter, r *http.Request, id identity) error {
	org, team, repo, err := grantRepo(r)
	if err != nil {
		return err
	}
	var req struct {
		Permission *hubmesh.Permission `json:"permission"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Permission == nil {
		return newError(codeBadRequest, "permission is required: read, write or admin")
	}
	if err := h.needOrgOwner(r.Context(), id, org); err != nil {
		return err
	}
	if err := h.accounts.SetTeamPermission(r.Context(), org, team, repo, *req.Permission); err != nil {
		return teamError(org, team, err)
	}
	h.audit(r, id, "team.grant", org+"/"+team, repo+"="+req.Permission.String())
	if *req.Permission == hubmesh.PermNone {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return writeJSON(w, http.StatusOK, "application/json", grantView{repo, *req.Permission})
}

// removeGrant serves DELETE .../permissions/{repo} (owners).
func (h *Hub) removeGrant(w http.ResponseWriter, r *http.Request, id identity) error {
	org, team, repo, err := grantRepo(r)
	if err != nil {
		return err
	}
	if err := h.needOrgOwner(r.Context(), id, org); err != nil {
		return err
	}
	if err := h.accounts.SetTeamPermission(r.Context(), org, team, repo, hubmesh.PermNone); err != nil {
		return teamError(org, team, err)
	}
	h.audit(r, id, "team.grant", org+"/"+team, repo+"=none")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
