package registryapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/hubmesh/hubmesh"
)

// The receiving end of federation (a mesh mirroring namespaces of another):
//
//	POST /api/v1/federation/{name}/hook
//
// takes a push webhook of the other mesh, as its webhooks send it (Docker
// Hub's payload, or the same in a CloudEvents envelope), signed in
// X-Hub-Signature-256 with the secret configured for link {name}. The
// signature is the only credential: the other mesh's accounts mean
// nothing here. The answer, 202, says the repository will be copied
// soon; the copy itself is the federation worker's.

// maxFederationHookBody bounds the body of a federation webhook.
const maxFederationHookBody = 1 << 20

// Federation is the federation of the node (node's federation worker).
type Federation interface {
	// HookSecret is the webhook secret of link name, "" when none is
	// configured; an unknown link wraps hubmesh.ErrNotFound.
	HookSecret(name string) (string, error)
	// RequestSync asks for repo of link name to be copied soon, without
	// waiting. A repository outside the link's namespaces wraps
	// hubmesh.ErrDenied.
	RequestSync(name, repo string) error
}

// federationPush is what the hook reads of a webhook body: Docker Hub's
// fields, at the top or under data (CloudEvents).
type federationPush struct {
	Repository struct {
		RepoName string `json:"repo_name"`
	} `json:"repository"`
	PushData struct {
		Tag string `json:"tag"`
	} `json:"push_data"`
	Data *federationPush `json:"data"`
}

// federationHook serves POST /api/v1/federation/{name}/hook.
func (h *Hub) federationHook(w http.ResponseWriter, r *http.Request, _ identity) error {
	if h.federation == nil {
		return notFound("this node federates no other mesh")
	}
	name := r.PathValue("name")
	secret, err := h.federation.HookSecret(name)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return notFound("no federation link %q", truncate(name, 80))
	}
	if err != nil {
		return err
	}
	if secret == "" {
		return newError(codeDenied, "federation link %q has no webhook secret (--federate-secret-file); its hooks are refused", truncate(name, 80))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFederationHookBody+1))
	if err != nil {
		return newError(codeBadRequest, "request body: %v", err)
	}
	if len(body) > maxFederationHookBody {
		return newError(codeBadRequest, "request body is larger than %d bytes", maxFederationHookBody)
	}
	if !validHubSignature(secret, body, r.Header.Get("X-Hub-Signature-256")) {
		return newError(codeDenied, "X-Hub-Signature-256 is missing or does not match the secret of link %q", truncate(name, 80))
	}
	var p federationPush
	if err := json.Unmarshal(body, &p); err != nil {
		return newError(codeBadRequest, "webhook body: %v", err)
	}
	if p.Repository.RepoName == "" && p.Data != nil {
		p = *p.Data
	}
	repo := p.Repository.RepoName
	if repo == "" {
		return newError(codeBadRequest, "webhook body: no repository.repo_name")
	}
	if err := h.federation.RequestSync(name, repo); err != nil {
		if errors.Is(err, hubmesh.ErrDenied) {
			return newError(codeDenied, "%v", err)
		}
		return err
	}
	return writeJSON(w, http.StatusAccepted, "application/json", federationHookResp{"queued", name, repo, p.PushData.Tag})
}

// federationHookResp is the answer of the federation hook.
type federationHookResp struct {
	Status     string `json:"status"`
	Link       string `json:"link"`
	Repository string `json:"repository"`
	Tag        string `json:"tag,omitempty"`
}

// validHubSignature checks an X-Hub-Signature-256 value ("sha256=" and
// the hex HMAC-SHA256 of body under secret) in constant time.
func validHubSignature(secret string, body []byte, header string) bool {
	got, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hmac.Equal(sig, m.Sum(nil))
}
