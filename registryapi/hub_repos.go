package registryapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

// Bounds of the descriptions of a repository, in characters, as Docker
// Hub counts them; the full description is also bounded in bytes by what
// the replicated state keeps (64 KiB).
const (
	maxShortDescription   = 100
	maxFullDescription    = 25000
	maxFullDescriptionLen = 64 << 10
)

// checkDescriptions enforces the bounds of the descriptions given.
func checkDescriptions(short, full *string) error {
	if short != nil && utf8.RuneCountInString(*short) > maxShortDescription {
		return newError(codeBadRequest, "description is longer than %d characters", maxShortDescription)
	}
	if full != nil && (utf8.RuneCountInString(*full) > maxFullDescription || len(*full) > maxFullDescriptionLen) {
		return newError(codeBadRequest, "full_description is longer than %d characters (or %d bytes)", maxFullDescription, maxFullDescriptionLen)
	}
	return nil
}

// repoView is a repository as Docker Hub shows it: name is the part after
// the namespace.
type repoView struct {
	Namespace       string    `json:"namespace"`
	Name            string    `json:"name"`
	IsPrivate       bool      `json:"is_private"`
	Description     string    `json:"description"`
	FullDescription string    `json:"full_description"`
	DateRegistered  time.Time `json:"date_registered"`
	LastUpdated     time.Time `json:"last_updated"`
	IsOfficial      bool      `json:"is_official"`
	IsAutomated     bool      `json:"is_automated"`
	StarCount       int64     `json:"star_count"`
	PullCount       int64     `json:"pull_count"`
}

func viewRepo(r hubmesh.Repository) repoView {
	ns := hubmesh.RepoOf(r.Name)
	name := r.Name
	if ns != "" {
		name = r.Name[len(ns)+1:]
	}
	return repoView{
		Namespace: ns, Name: name, IsPrivate: r.IsPrivate, Description: r.Description,
		FullDescription: r.FullDescription, DateRegistered: r.Created, LastUpdated: r.Updated,
		IsOfficial: r.IsOfficial, IsAutomated: r.IsAutomated, StarCount: r.StarCount, PullCount: r.PullCount,
	}
}

// repoName reads {ns}/{name...} of a repository URL.
func repoName(r *http.Request) (string, error) {
	name := r.PathValue("ns") + "/" + r.PathValue("name")
	if !validName(name) {
		return "", newError(codeNameInvalid, "invalid repository name %q", truncate(name, 300))
	}
	return name, nil
}

// repoFacts reads the access facts of id on repo; a repository id may
// not see is a 404, as if it did not exist.
func (h *Hub) repoFacts(ctx context.Context, id identity, repo string) (hubmesh.AccessFacts, error) {
	f, err := h.accounts.AccessFacts(ctx, id.user, repo)
	if err != nil {
		return f, err
	}
	if !auth.Visible(f) {
		return f, repoUnknown(repo)
	}
	return f, nil
}

func repoUnknown(repo string) error {
	return &apiError{code: codeNameUnknown, message: fmt.Sprintf("repository %q not found", repo)}
}

// repository loads the record of a visible repository.
func (h *Hub) repository(ctx context.Context, id identity, name string) (hubmesh.Repository, hubmesh.AccessFacts, error) {
	f, err := h.repoFacts(ctx, id, name)
	if err != nil {
		return hubmesh.Repository{}, f, err
	}
	repo, err := h.accounts.Repository(ctx, name)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return repo, f, repoUnknown(name)
	}
	return repo, f, err
}

// listRepos serves GET /api/v1/repositories[?namespace=] and
// /api/v1/repositories/{ns}: the repositories the caller may see.
func (h *Hub) listRepos(w http.ResponseWriter, r *http.Request, id identity) error {
	ctx := r.Context()
	p, err := pageRequest(r)
	if err != nil {
		return err
	}
	ns := r.PathValue("ns")
	if ns == "" {
		ns = r.URL.Query().Get("namespace")
	}
	prefix := ""
	if ns != "" {
		prefix = ns + "/"
	}
	names, more, err := fetchPage(p, func(p hubmesh.Page) ([]string, error) {
		return visibleRepositories(ctx, h.listings, h.auth, id, prefix, p)
	})
	if err != nil {
		return err
	}
	out := make([]repoView, 0, len(names))
	for _, name := range names {
		repo, err := h.accounts.Repository(ctx, name)
		if errors.Is(err, hubmesh.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return err
		}
		out = append(out, viewRepo(repo))
	}
	last := ""
	if len(names) > 0 {
		last = names[len(names)-1]
	}
	return writePage(w, r, p, out, more, last)
}

// createRepo serves POST /api/v1/repositories {namespace, name,
// is_private, description, full_description}: it needs write on the
// namespace, as a first push does.
func (h *Hub) createRepo(w http.ResponseWriter, r *http.Request, id identity) error {
	var req struct {
		Namespace       string `json:"namespace"`
		Name            string `json:"name"`
		IsPrivate       *bool  `json:"is_private"`
		Description     string `json:"description"`
		FullDescription string `json:"full_description"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	full := req.Name
	if req.Namespace != "" {
		full = req.Namespace + "/" + req.Name
	}
	if req.Name == "" || !validName(full) {
		return newError(codeNameInvalid, "invalid repository name %q", truncate(full, 300))
	}
	if err := checkDescriptions(&req.Description, &req.FullDescription); err != nil {
		return err
	}
	ctx := r.Context()
	f, err := h.accounts.AccessFacts(ctx, id.user, full)
	if err != nil {
		return err
	}
	if !slices.Contains(auth.CapActions(auth.Actions(f), id.scopes), auth.ActionPush) {
		return newError(codeDenied, "you may not create repositories in %q", hubmesh.RepoOf(full))
	}
	ns := hubmesh.RepoOf(full)
	private := f.Namespace.DefaultPrivate
	if req.IsPrivate != nil {
		private = *req.IsPrivate
	}
	now := h.auth.now().UTC()
	repo := hubmesh.Repository{
		Namespace: ns, Name: full, IsPrivate: private, Description: req.Description,
		FullDescription: req.FullDescription, Created: now, Updated: now,
	}
	if err := h.accounts.CreateRepository(ctx, repo); err != nil {
		if errors.Is(err, hubmesh.ErrExists) {
			return &apiError{code: codeConflict, message: fmt.Sprintf("repository %q exists", full), cause: err}
		}
		return err
	}
	h.audit(r, id, "repo.create", full, fmt.Sprintf("is_private=%t", private))
	return writeJSON(w, http.StatusCreated, "application/json", viewRepo(repo))
}

// getRepo serves GET /api/v1/repositories/{ns}/{name}.
func (h *Hub) getRepo(w http.ResponseWriter, r *http.Request, id identity) error {
	name, err := repoName(r)
	if err != nil {
		return err
	}
	repo, _, err := h.repository(r.Context(), id, name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", viewRepo(repo))
}

// repoAdmin loads a repository the caller administers: 404 if they may
// not see it, 403 if they may see but not administer it.
func (h *Hub) repoAdmin(r *http.Request, id identity) (hubmesh.Repository, error) {
	name, err := repoName(r)
	if err != nil {
		return hubmesh.Repository{}, err
	}
	repo, f, err := h.repository(r.Context(), id, name)
	if err != nil {
		return repo, err
	}
	if auth.Permission(f) < hubmesh.PermAdmin {
		return repo, newError(codeDenied, "you may not change repository %q", name)
	}
	return repo, nil
}

// patchRepo serves PATCH /api/v1/repositories/{ns}/{name} {is_private,
// description, full_description} (admin permission on the repository).
func (h *Hub) patchRepo(w http.ResponseWriter, r *http.Request, id identity) error {
	var req struct {
		IsPrivate       *bool   `json:"is_private"`
		Description     *string `json:"description"`
		FullDescription *string `json:"full_description"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := checkDescriptions(req.Description, req.FullDescription); err != nil {
		return err
	}
	repo, err := h.repoAdmin(r, id)
	if err != nil {
		return err
	}
	upd := hubmesh.RepositoryUpdate{IsPrivate: req.IsPrivate, Description: req.Description, FullDescription: req.FullDescription, At: h.auth.now().UTC()}
	nr, err := h.accounts.UpdateRepository(r.Context(), repo.Name, upd)
	if err != nil {
		if errors.Is(err, hubmesh.ErrNotFound) {
			return repoUnknown(repo.Name)
		}
		return err
	}
	if req.IsPrivate != nil && *req.IsPrivate != repo.IsPrivate {
		h.audit(r, id, "repo.visibility", repo.Name, fmt.Sprintf("is_private=%t", *req.IsPrivate))
	}
	return writeJSON(w, http.StatusOK, "application/json", viewRepo(nr))
}

// deleteRepo serves DELETE /api/v1/repositories/{ns}/{name}: manifests,
// tags, links and grants go with it.
func (h *Hub) deleteRepo(w http.ResponseWriter, r *http.Request, id identity) error {
	repo, err := h.repoAdmin(r, id)
	if err != nil {
		return err
	}
	if err := h.accounts.DeleteRepository(r.Context(), repo.Name); err != nil {
		if errors.Is(err, hubmesh.ErrNotFound) {
			return repoUnknown(repo.Name)
		}
		return err
	}
	h.audit(r, id, "repo.delete", repo.Name, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// namespace loads a namespace someone owns (404 otherwise).
func (h *Hub) namespace(ctx context.Context, name string) (hubmesh.Namespace, error) {
	ns, err := h.accounts.Namespace(ctx, name)
	if err != nil {
		return ns, err
	}
	if ns.Kind == "" {
		return ns, notFound("namespace %q not found", truncate(name, 60))
	}
	return ns, nil
}

// getNamespace serves GET /api/v1/namespaces/{ns}.
func (h *Hub) getNamespace(w http.ResponseWriter, r *http.Request, _ identity) error {
	ns, err := h.namespace(r.Context(), r.PathValue("ns"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", ns)
}

// patchNamespace serves PATCH /api/v1/namespaces/{ns} {default_private}:
// the user of a user namespace, owners of an org, site admins.
func (h *Hub) patchNamespace(w http.ResponseWriter, r *http.Request, id identity) error {
	var req struct {
		DefaultPrivate *bool `json:"default_private"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	ns, err := h.namespace(ctx, r.PathValue("ns"))
	if err != nil {
		return err
	}
	switch {
	case id.admin:
	case ns.Kind == "user" && ns.Name == id.user:
	case ns.Kind == "org":
		if err := h.needOrgOwner(ctx, id, ns.Name); err != nil {
			return err
		}
	default:
		return newError(codeDenied, "you may not change namespace %q", ns.Name)
	}
	if req.DefaultPrivate != nil && *req.DefaultPrivate != ns.DefaultPrivate {
		ns.DefaultPrivate = *req.DefaultPrivate
		if err := h.accounts.SetNamespace(ctx, ns); err != nil {
			return err
		}
		h.audit(r, id, "namespace.update", ns.Name, fmt.Sprintf("default_private=%t", ns.DefaultPrivate))
	}
	return writeJSON(w, http.StatusOK, "application/json", ns)
}
