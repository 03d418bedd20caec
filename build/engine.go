package build

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hubmesh/hubmesh"
)

// DefaultEngineHost is the Docker Engine socket used when DOCKER_HOST is
// unset.
const DefaultEngineHost = "unix:///var/run/docker.sock"

// EngineHostFromEnv returns DOCKER_HOST, or DefaultEngineHost. It is for
// main and tests; library code takes the host as configuration.
func EngineHostFromEnv() string {
	if h := strings.TrimSpace(os.Getenv("DOCKER_HOST")); h != "" {
		return h
	}
	return DefaultEngineHost
}

// Engine is a minimal Docker Engine API client: ping, build, push and
// remove an image. It speaks the unversioned API paths, so the daemon
// answers in its current API version, and writes the few calls by hand
// rather than linking the docker client module.
//
// Builds go through BuildKit (version=2) by default, with the classic
// builder as a fallback; see BuildOptions.Builder. The Dockerfiles of
// automated builds work with both.
type Engine struct {
	hc   *http.Client
	base string // http://docker for a unix socket, http://host:port for tcp

	// noBuildKit is set once the daemon refused a BuildKit build: later
	// builds that leave the builder to the Engine go classic directly.
	noBuildKit atomic.Bool
}

// NewEngine returns a client for host, "unix:///path/to/docker.sock" or
// "tcp://host:port" (plain HTTP: TLS to a remote daemon is not supported).
// It does not connect; call Ping.
func NewEngine(host string) (*Engine, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("docker host %q: %v: %w", host, err, hubmesh.ErrInvalid)
	}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			return nil, fmt.Errorf("docker host %q: no socket path: %w", host, hubmesh.ErrInvalid)
		}
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			DisableCompression: true,
		}
		return &Engine{hc: &http.Client{Transport: tr}, base: "http://docker"}, nil
	case "tcp", "http":
		if u.Host == "" {
			return nil, fmt.Errorf("docker host %q: no address: %w", host, hubmesh.ErrInvalid)
		}
		tr := &http.Transport{DisableCompression: true}
		return &Engine{hc: &http.Client{Transport: tr}, base: "http://" + u.Host}, nil
	}
	return nil, fmt.Errorf("docker host %q: want unix:// or tcp://: %w", host, hubmesh.ErrInvalid)
}

// Close releases idle connections.
func (e *Engine) Close() error {
	e.hc.CloseIdleConnections()
	return nil
}

// Ping checks that the daemon answers.
func (e *Engine) Ping(ctx context.Context) error {
	resp, err := e.do(ctx, http.MethodGet, "/_ping", nil, nil, nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// BuildOptions are the parameters of one image build.
type BuildOptions struct {
	// Tags are full image references, "registry:5000/ns/name:tag".
	Tags []string
	// Dockerfile is the path of the Dockerfile inside the context tar.
	Dockerfile string
	BuildArgs  map[string]string
	Labels     map[string]string
	// NoCache disables the layer cache (a rule with BuildCache off).
	NoCache bool
	// Pull asks the daemon to pull a newer base image first.
	Pull bool
	// RegistryAuths are credentials for pulling base images, by registry
	// host ("registry:5000"). Only the classic builder uses them (see
	// Builder).
	RegistryAuths map[string]RegistryAuth
	// Builder is BuilderBuildKit, BuilderClassic, or "" to let the Engine
	// choose: BuildKit, unless RegistryAuths are set or the daemon refused
	// BuildKit before, and the classic builder when the daemon refuses it.
	Builder string
}

// The builders of BuildOptions.Builder.
//
// BuildKit is driven without a session (this client does not speak the
// session's gRPC protocol): the context goes up as the request's tar body,
// as for the classic builder, and base images are pulled anonymously, so
// a build with RegistryAuths needs the classic builder. Registries on
// 127.0.0.0/8 are insecure (plain HTTP) by default for both, and tags,
// Dockerfile path, build args, labels, NoCache and Pull work the same.
const (
	BuilderBuildKit = "buildkit"
	BuilderClassic  = "classic"
)

// replayLimit is how much of a build context Build keeps to send it again
// to the classic builder when the daemon refuses BuildKit. The daemon
// refuses before reading the body, so little more than the socket buffers
// has been consumed by then.
const replayLimit = 4 << 20

// RegistryAuth is a credential the daemon presents to a registry, sent
// base64url-encoded in X-Registry-Auth. Set Username and Password (a
// token may be the password), or IdentityToken, or RegistryToken (a bearer
// token used as is).
type RegistryAuth struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	ServerAddress string `json:"serveraddress,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

func encodeHeader(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return base64.URLEncoding.EncodeToString(b), nil
}

// BuildError is a build that ran and failed (a failing step, a missing
// file, a Dockerfile the daemon rejects). It wraps hubmesh.ErrInvalid: the
// cause is the source, not the builder.
type BuildError struct {
	Message string
}

func (e *BuildError) Error() string { return "build failed: " + e.Message }

// Unwrap makes a BuildError match hubmesh.ErrInvalid.
func (e *BuildError) Unwrap() error { return hubmesh.ErrInvalid }

// Build sends the tar stream buildContext to the daemon, forwards the
// build output to log (may be nil; BuildKit's progress is rendered as
// plain text, like `docker build --progress=plain`) and returns the image
// ID ("sha256:..."). A failed build returns a *BuildError with the
// daemon's message; a daemon that cannot be reached or refuses the
// requested builder wraps hubmesh.ErrUnavailable.
func (e *Engine) Build(ctx context.Context, buildContext io.Reader, opts BuildOptions, log io.Writer) (string, error) {
	q := url.Values{}
	for _, t := range opts.Tags {
		q.Add("t", t)
	}
	if opts.Dockerfile != "" {
		q.Set("dockerfile", opts.Dockerfile)
	}
	q.Set("rm", "1")
	q.Set("forcerm", "1")
	if opts.NoCache {
		q.Set("nocache", "1")
	}
	if opts.Pull {
		q.Set("pull", "1")
	}
	for name, m := range map[string]map[string]string{"buildargs": opts.BuildArgs, "labels": opts.Labels} {
		if len(m) > 0 {
			b, err := json.Marshal(m)
			if err != nil {
				return "", fmt.Errorf("build: %s: %w", name, err)
			}
			q.Set(name, string(b))
		}
	}
	h := http.Header{"Content-Type": {"application/x-tar"}}
	if len(opts.RegistryAuths) > 0 {
		v, err := encodeHeader(opts.RegistryAuths)
		if err != nil {
			return "", fmt.Errorf("build: registry auth: %w", err)
		}
		h.Set("X-Registry-Config", v)
	}
	switch opts.Builder {
	case BuilderClassic:
		return e.build(ctx, buildContext, q, h, false, log)
	case BuilderBuildKit:
		if len(opts.RegistryAuths) > 0 {
			return "", fmt.Errorf("build: BuildKit without a session pulls anonymously: RegistryAuths need the %s builder: %w",
				BuilderClassic, hubmesh.ErrInvalid)
		}
		body, stop := buildKitContext(buildContext)
		defer stop()
		return e.build(ctx, body, q, h, true, log)
	case "":
		if len(opts.RegistryAuths) > 0 || e.noBuildKit.Load() {
			return e.build(ctx, buildContext, q, h, false, log)
		}
	default:
		return "", fmt.Errorf("build: builder %q: want %q or %q: %w", opts.Builder, BuilderBuildKit, BuilderClassic, hubmesh.ErrInvalid)
	}
	body, stop := buildKitContext(buildContext)
	defer stop()
	rr := &replayReader{r: body}
	id, err := e.build(ctx, rr, q, h, true, log)
	var refused *buildKitRefused
	if !errors.As(err, &refused) {
		return id, err
	}
	e.noBuildKit.Store(true)
	again, ok := rr.replay()
	if !ok {
		return "", fmt.Errorf("%w; more than %d bytes of the context were sent, so this build cannot be sent again, the next one uses the %s builder",
			err, replayLimit, BuilderClassic)
	}
	if log != nil {
		_, _ = fmt.Fprintf(log, "The daemon refused BuildKit (%s): using the %s builder.\n", refused.msg, BuilderClassic)
	}
	return e.build(ctx, again, q, h, false, log)
}

// buildKitRefused is the daemon's answer to a BuildKit build it does not
// support ("buildkit is not enabled on daemon", or an old daemon's
// "invalid version").
type buildKitRefused struct{ msg string }

func (e *buildKitRefused) Error() string { return "build: the daemon refused BuildKit: " + e.msg }

func (e *buildKitRefused) Unwrap() error { return hubmesh.ErrUnavailable }

// build runs one POST /build with the builder of version 2 (BuildKit) or 1.
func (e *Engine) build(ctx context.Context, body io.Reader, q url.Values, h http.Header, buildKit bool, log io.Writer) (string, error) {
	q = maps.Clone(q)
	if buildKit {
		q.Set("version", "2")
	} else {
		q.Set("version", "1")
	}
	resp, err := e.do(ctx, http.MethodPost, "/build", q, h, body)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			m := strings.ToLower(ae.msg)
			if buildKit && (ae.status == http.StatusBadRequest || ae.status == http.StatusInternalServerError) &&
				(strings.Contains(m, "buildkit") || strings.Contains(m, "version")) {
				return "", &buildKitRefused{msg: ae.msg}
			}
			if ae.status <= http.StatusInternalServerError {
				// The classic builder answers 500 for a Dockerfile it
				// cannot find or parse: the message is the user's to read.
				return "", &BuildError{Message: ae.msg}
			}
		}
		return "", fmt.Errorf("build: %w", err)
	}
	defer resp.Body.Close()
	var id string
	progress := newPlainProgress(log)
	err = readStream(resp.Body, log, func(msgID string, aux json.RawMessage) {
		if msgID == traceMessageID {
			progress.trace(aux)
			return
		}
		// {"id":"moby.image.id","aux":{"ID":...}} from BuildKit, the
		// same without the id from the classic builder.
		var v struct{ ID string }
		if json.Unmarshal(aux, &v) == nil && v.ID != "" {
			id = v.ID
		}
	})
	progress.finish()
	var se *streamError
	switch {
	case errors.As(err, &se):
		return "", &BuildError{Message: se.msg}
	case err != nil:
		return "", fmt.Errorf("build: reading the daemon's output: %w: %w", hubmesh.ErrUnavailable, err)
	case id == "":
		return "", fmt.Errorf("build: the daemon reported no image ID: %w", hubmesh.ErrUnavailable)
	}
	return id, nil
}

// replayReader keeps the first replayLimit bytes read through it, so that
// a request the daemon refused can be sent again. The HTTP transport may
// still be reading the refused request's body when the answer arrives:
// replay stops those reads first.
type replayReader struct {
	mu      sync.Mutex
	r       io.Reader
	kept    []byte
	lost    bool // more than replayLimit bytes read: kept was dropped
	stopped bool
}

func (rr *replayReader) Read(p []byte) (int, error) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.stopped {
		return 0, io.ErrClosedPipe
	}
	n, err := rr.r.Read(p)
	if !rr.lost {
		if len(rr.kept)+n > replayLimit {
			rr.lost, rr.kept = true, nil
		} else {
			rr.kept = append(rr.kept, p[:n]...)
		}
	}
	return n, err
}

// replay ends reads through rr and returns a reader of the whole stream
// again, or false when too much of it was read to keep.
func (rr *replayReader) replay() (io.Reader, bool) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	rr.stopped = true
	if rr.lost {
		return nil, false
	}
	return io.MultiReader(bytes.NewReader(rr.kept), rr.r), true
}

// Push pushes ref ("registry:5000/ns/name:tag") with auth, forwards the
// progress lines to log (may be nil) and returns the manifest digest the
// registry reported. Errors wrap hubmesh.ErrDenied when the registry
// refused the credentials, else hubmesh.ErrUnavailable.
func (e *Engine) Push(ctx context.Context, ref string, auth RegistryAuth, log io.Writer) (string, error) {
	name, tag := splitRef(ref)
	if name == "" || tag == "" || strings.ContainsAny(ref, "?# \t\n") {
		return "", fmt.Errorf("push: %q: want registry/name:tag: %w", ref, hubmesh.ErrInvalid)
	}
	a, err := encodeHeader(auth)
	if err != nil {
		return "", fmt.Errorf("push: auth: %w", err)
	}
	resp, err := e.do(ctx, http.MethodPost, "/images/"+name+"/push", url.Values{"tag": {tag}},
		http.Header{"X-Registry-Auth": {a}}, nil)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	defer resp.Body.Close()
	var digest string
	err = readStream(resp.Body, log, func(_ string, aux json.RawMessage) {
		var v struct{ Digest string }
		if json.Unmarshal(aux, &v) == nil && v.Digest != "" {
			digest = v.Digest
		}
	})
	var se *streamError
	switch {
	case errors.As(err, &se):
		// The daemon reports registry errors as text only; these words are
		// what distribution's errcodes print for 401 and 403.
		m := strings.ToLower(se.msg)
		if strings.Contains(m, "unauthorized") || strings.Contains(m, "denied") || strings.Contains(m, "authentication required") {
			return "", fmt.Errorf("push %s: %s: %w", ref, se.msg, hubmesh.ErrDenied)
		}
		return "", fmt.Errorf("push %s: %s: %w", ref, se.msg, hubmesh.ErrUnavailable)
	case err != nil:
		return "", fmt.Errorf("push %s: reading the daemon's output: %w: %w", ref, hubmesh.ErrUnavailable, err)
	case digest == "":
		return "", fmt.Errorf("push %s: the daemon reported no digest: %w", ref, hubmesh.ErrUnavailable)
	}
	return digest, nil
}

// RemoveImage deletes an image (by ID or reference) from the daemon,
// with its untagged parents; a missing image wraps hubmesh.ErrNotFound.
func (e *Engine) RemoveImage(ctx context.Context, ref string) error {
	resp, err := e.do(ctx, http.MethodDelete, "/images/"+ref, url.Values{"force": {"1"}}, nil, nil)
	if err != nil {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// splitRef splits "host:5000/ns/name:tag" into name and tag.
func splitRef(ref string) (string, string) {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, ""
	}
	return ref[:i], ref[i+1:]
}

// apiError is a non-2xx answer of the Engine API.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("docker engine: %d: %s", e.status, e.msg) }

func (e *apiError) Unwrap() error {
	switch {
	case e.status == http.StatusNotFound:
		return hubmesh.ErrNotFound
	case e.status == http.StatusUnauthorized || e.status == http.StatusForbidden:
		return hubmesh.ErrDenied
	case e.status == http.StatusConflict:
		return hubmesh.ErrExists
	case e.status < 500:
		return hubmesh.ErrInvalid
	}
	return hubmesh.ErrUnavailable
}

func (e *Engine) do(ctx context.Context, method, path string, q url.Values, h http.Header, body io.Reader) (*http.Response, error) {
	u := e.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("docker engine: %w: %w", hubmesh.ErrInvalid, err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("docker engine: %w: %w", hubmesh.ErrUnavailable, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var v struct{ Message string }
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &v) == nil && v.Message != "" {
			msg = v.Message
		}
		return nil, &apiError{status: resp.StatusCode, msg: msg}
	}
	return resp, nil
}

// streamError is an {"error": ...} message in a JSON stream.
type streamError struct{ msg string }

func (e *streamError) Error() string { return e.msg }

// readStream decodes the daemon's JSON message stream: "stream" text and
// status lines go to log (progress bar updates are dropped: they would
// swamp a stored log), aux payloads to aux with the message's id, and the
// first error message ends the stream as a *streamError.
func readStream(r io.Reader, log io.Writer, aux func(id string, aux json.RawMessage)) error {
	if log == nil {
		log = io.Discard
	}
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var m struct {
			Stream      string `json:"stream"`
			Status      string `json:"status"`
			ID          string `json:"id"`
			Progress    string `json:"progress"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
			Aux json.RawMessage `json:"aux"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch {
		case m.Error != "" || m.ErrorDetail != nil:
			msg := m.Error
			if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
				msg = m.ErrorDetail.Message
			}
			_, _ = fmt.Fprintf(log, "ERROR: %s\n", msg)
			return &streamError{msg: strings.TrimSpace(msg)}
		case m.Stream != "":
			_, _ = io.WriteString(log, m.Stream)
		case m.Status != "" && m.Progress == "":
			if m.ID != "" {
				_, _ = fmt.Fprintf(log, "%s: %s\n", m.ID, m.Status)
			} else {
				_, _ = fmt.Fprintln(log, m.Status)
			}
		}
		if len(m.Aux) > 0 {
			aux(m.ID, m.Aux)
		}
	}
}
