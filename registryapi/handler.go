package registryapi

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is what the API plane needs from the rest of the node.
type Config struct {
	Manifests Manifests
	Listings  Listings
	Links     BlobLinks
	Blobs     Blobs
	Uploads   Uploads
	// Logger receives 5xx causes; it is required.
	Logger *slog.Logger
	// Registerer receives the request metrics; nil means no metrics.
	Registerer prometheus.Registerer
	// Auth enforces access control; nil serves everyone everything (a
	// registry without accounts). A node always sets it.
	Auth *Auth
	// Stats counts manifest pulls; nil counts nothing.
	Stats PullStats
}

// Handler serves the OCI distribution API (spec v1.1) under /v2/.
type Handler struct {
	manifests Manifests
	listings  Listings
	links     BlobLinks
	blobs     Blobs
	uploads   Uploads
	log       *slog.Logger
	auth      *Auth
	stats     PullStats
	metrics   *metrics
	routes    [len(templates)]map[string]handlerFunc
	allow     [len(templates)]string // Allow header of each route
}

// New checks cfg and builds a Handler. It reports every missing field at
// once and never panics.
func New(cfg Config) (*Handler, error) {
	var errs []error
	if cfg.Manifests == nil {
		errs = append(errs, errors.New("registryapi: Config.Manifests is required"))
	}
	if cfg.Listings == nil {
		errs = append(errs, errors.New("registryapi: Config.Listings is required"))
	}
	if cfg.Links == nil {
		errs = append(errs, errors.New("registryapi: Config.Links is required"))
	}
	if cfg.Blobs == nil {
		errs = append(errs, errors.New("registryapi: Config.Blobs is required"))
	}
	if cfg.Uploads == nil {
		errs = append(errs, errors.New("registryapi: Config.Uploads is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("registryapi: Config.Logger is required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	h := &Handler{
		manifests: cfg.Manifests,
		listings:  cfg.Listings,
		links:     cfg.Links,
		blobs:     cfg.Blobs,
		uploads:   cfg.Uploads,
		log:       cfg.Logger,
		auth:      cfg.Auth,
		stats:     cfg.Stats,
	}
	if cfg.Registerer != nil {
		m, err := newMetrics(cfg.Registerer)
		if err != nil {
			return nil, err
		}
		h.metrics = m
	}
	for k := range h.routes {
		h.routes[k] = h.methods(routeKind(k))
		h.allow[k] = allowHeader(h.routes[k])
	}
	return h, nil
}

// ServeHTTP serves /v2/ and everything under it; any other path gets a
// 404 in the OCI error format.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	rw := &responseWriter{ResponseWriter: w}
	var body *countingBody
	if h.metrics != nil && r.Body != nil && r.Body != http.NoBody {
		body = &countingBody{rc: r.Body}
		r.Body = body
	}
	rt, err := parseRoute(r.URL.EscapedPath())
	if err == nil {
		fn, ok := h.routes[rt.Kind][r.Method]
		if ok {
			if h.auth != nil {
				r, err = h.auth.authorizeV2(r, rt)
				if errors.Is(err, errHidden) {
					err = h.hiddenResponse(rw, r, rt)
				} else if err == nil {
					err = fn(rw, r, rt)
				}
			} else {
				err = fn(rw, r, rt)
			}
		} else {
			w.Header().Set("Allow", h.allow[rt.Kind])
			err = newError(codeMethodNotAllowed, "method %s not allowed on %s", truncate(r.Method, 20), rt.template())
		}
	}
	if err != nil {
		if rw.wroteHeader {
			// The response is under way (a body copy failed): the client sees
			// a short body; log why.
			h.log.Debug("response aborted", "method", r.Method, "route", rt.template(), "err", err)
		} else {
			writeError(h.log, rw, r, rt.template(), err)
		}
	}
	if h.metrics != nil {
		var in int64
		if body != nil {
			in = body.n
		}
		h.metrics.observe(rt.template(), r.Method, rw.status(), in, rw.written, time.Since(start))
	}
}

// base answers the API version check.
func (h *Handler) base(w http.ResponseWriter, r *http.Request, _ route) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte("{}"))
	}
	return nil
}
