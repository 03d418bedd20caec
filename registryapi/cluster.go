package registryapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// ClusterMember is one node of the cluster as the cluster API shows it.
type ClusterMember struct {
	ID     string   `json:"id"`
	Role   string   `json:"role"` // voter or nonvoter
	Leader bool     `json:"leader"`
	HTTP   string   `json:"http"`
	P2P    []string `json:"p2p,omitempty"`
	// State is alive, unreachable, or joining (in the member list but not
	// yet in the Raft configuration).
	State string `json:"state"`
}

// RaftStatus is the Raft view of the node that answers.
type RaftStatus struct {
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	AppliedIndex uint64 `json:"applied_index"`
}

// BlobStatus counts what the answering node holds locally.
type BlobStatus struct {
	Count int64 `json:"count"`
	Bytes int64 `json:"bytes"`
}

// ClusterStatus is what `hubmesh cluster status` shows.
type ClusterStatus struct {
	ClusterID string `json:"cluster_id"`
	ID        string `json:"id"`
	Leader    string `json:"leader"`
	Healthy   bool   `json:"healthy"`
	// Offline is set when the answering node knows no Raft leader: it is
	// cut off from its cluster, serves reads from what it holds and
	// refuses writes. OfflineReason says why.
	Offline       bool            `json:"offline,omitempty"`
	OfflineReason string          `json:"offline_reason,omitempty"`
	Raft          RaftStatus      `json:"raft"`
	Blobs         BlobStatus      `json:"blobs"`
	Members       []ClusterMember `json:"members"`
}

// JoinToken is a signed, expiring invitation to join one cluster.
type JoinToken struct {
	Token     string    `json:"token"`
	Role      string    `json:"role"`
	ExpiresAt time.Time `json:"expires_at"`
}

// JoinRequest is what a joining node sends to any member.
type JoinRequest struct {
	Token  string        `json:"token"`
	Member ClusterMember `json:"member"`
}

// JoinResponse tells a new member who is in the cluster.
type JoinResponse struct {
	ClusterID string          `json:"cluster_id"`
	Members   []ClusterMember `json:"members"`
}

// Cluster is the membership of the mesh, as the cluster API consumes it.
// The node package implements it.
type Cluster interface {
	Status(ctx context.Context) (ClusterStatus, error)
	// CreateJoinToken signs a token for role (voter or mirror) valid for ttl.
	CreateJoinToken(ctx context.Context, role string, ttl time.Duration) (JoinToken, error)
	// Join checks req.Token and adds req.Member to the cluster. A bad token
	// fails with an error wrapping hubmesh.ErrDenied that says why.
	Join(ctx context.Context, req JoinRequest) (JoinResponse, error)
	// Leave takes the answering node out of the cluster.
	Leave(ctx context.Context) error
	// RemoveMember takes another node out of the cluster.
	RemoveMember(ctx context.Context, id string) error
}

// maxClusterBody bounds the JSON bodies of the cluster API.
const maxClusterBody = 64 << 10

// maxJoinTokenTTL bounds how long a join token may stay valid.
const maxJoinTokenTTL = 30 * 24 * time.Hour

// ClusterHandler serves /api/v1/cluster/.
type ClusterHandler struct {
	cluster Cluster
	log     *slog.Logger
	mux     *http.ServeMux
	auth    *Auth
}

// ClusterOption configures a ClusterHandler.
type ClusterOption func(*ClusterHandler)

// WithAdminAuth makes creating join tokens, leaving and removing members
// a site administrator's privilege (401 without credentials, 403 for
// others). Status and join (which carries its own join token) stay open.
func WithAdminAuth(a *Auth) ClusterOption {
	return func(h *ClusterHandler) { h.auth = a }
}

// NewClusterHandler builds the cluster API over c.
func NewClusterHandler(c Cluster, logger *slog.Logger, opts ...ClusterOption) (*ClusterHandler, error) {
	if c == nil || logger == nil {
		return nil, errors.New("registryapi: NewClusterHandler needs a Cluster and a Logger")
	}
	h := &ClusterHandler{cluster: c, log: logger, mux: http.NewServeMux()}
	for _, o := range opts {
		o(h)
	}
	h.handle(http.MethodGet, "/api/v1/cluster/status", h.status)
	h.handle(http.MethodPost, "/api/v1/cluster/join-tokens", h.admin(h.joinToken))
	h.handle(http.MethodPost, "/api/v1/cluster/join", h.join)
	h.handle(http.MethodPost, "/api/v1/cluster/leave", h.admin(h.leave))
	h.handle(http.MethodDelete, "/api/v1/cluster/members/{id}", h.admin(h.remove))
	h.mux.HandleFunc("/api/v1/cluster/", func(w http.ResponseWriter, r *http.Request) {
		writeError(h.log, w, r, "/api/v1/cluster/", newError(codeNotFound, "no such API endpoint: %s %s", truncate(r.Method, 20), truncate(r.URL.Path, 200)))
	})
	return h, nil
}

// handle serves method on path with fn; any other method on path is a 405
// with an Allow header, as on the registry API, not the catch-all's 404.
func (h *ClusterHandler) handle(method, path string, fn func(http.ResponseWriter, *http.Request) error) {
	pattern := method + " " + path
	h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", method)
		writeError(h.log, w, r, path, newError(codeMethodNotAllowed, "method %s not allowed on %s", truncate(r.Method, 20), path))
	})
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rw := &responseWriter{ResponseWriter: w}
		err := fn(rw, r)
		switch {
		case err == nil:
		case rw.wroteHeader: // the body write failed: the client went away
			h.log.Debug("response aborted", "method", r.Method, "route", pattern, "err", err)
		default:
			writeError(h.log, rw, r, pattern, err)
		}
	})
}

// admin wraps fn so that only site administrators reach it, when the
// handler has an Auth.
func (h *ClusterHandler) admin(fn func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if h.auth == nil {
			return fn(w, r)
		}
		id, err := h.auth.authenticate(r, bearerKinds{session: true})
		switch {
		case err != nil && toAPIError(err).code != codeUnauthorized:
			return err
		case err != nil || id.user == "":
			return (&apiError{code: codeUnauthorized, message: "authentication required: site administrators only", cause: err}).
				withHeader("WWW-Authenticate", `Bearer realm="`+baseURL(r)+`/token",service="`+h.auth.service+`"`)
		case !id.admin || id.capped():
			return newError(codeDenied, "only site administrators may do this")
		}
		return fn(w, r)
	}
}

// ServeHTTP implements http.Handler.
func (h *ClusterHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *ClusterHandler) status(w http.ResponseWriter, r *http.Request) error {
	st, err := h.cluster.Status(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", st)
}

func (h *ClusterHandler) joinToken(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Role string `json:"role"`
		TTL  string `json:"ttl"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Role == "" {
		req.Role = "voter"
	}
	if req.Role != "voter" && req.Role != "mirror" {
		return newError(codeBadRequest, "role %q: want voter or mirror", truncate(req.Role, 40))
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > maxJoinTokenTTL {
			return newError(codeBadRequest, "ttl %q: want a duration such as 1h, at most %s", truncate(req.TTL, 40), maxJoinTokenTTL)
		}
		ttl = d
	}
	tok, err := h.cluster.CreateJoinToken(r.Context(), req.Role, ttl)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, "application/json", tok)
}

func (h *ClusterHandler) join(w http.ResponseWriter, r *http.Request) error {
	var req JoinRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Token == "" || req.Member.ID == "" {
		return newError(codeBadRequest, "a join request needs token and member.id")
	}
	resp, err := h.cluster.Join(r.Context(), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", resp)
}

func (h *ClusterHandler) leave(w http.ResponseWriter, r *http.Request) error {
	if err := h.cluster.Leave(r.Context()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *ClusterHandler) remove(w http.ResponseWriter, r *http.Request) error {
	if err := h.cluster.RemoveMember(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// readJSON decodes a bounded JSON body strictly; an empty body is {}.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxClusterBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return newError(codeBadRequest, "request body: %v", err)
	}
	return nil
}
