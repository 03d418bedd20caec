package node

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/multiformats/go-multiaddr"
	"go.yaml.in/yaml/v3"

	"github.com/hubmesh/hubmesh/build"
)

// Config is everything a node is started with. Precedence, applied by
// cmd/hubmesh: Default() < config file < HUBMESH_* environment < flags.
type Config struct {
	// DataDir holds all state of the node: consensus/, blobs/, uploads/, p2p/.
	DataDir string `yaml:"data_dir"`
	// HTTPAddr is the listen address of the registry API (host:port, port 0
	// picks a free port).
	HTTPAddr string `yaml:"http_addr"`
	// P2PAddrs are the libp2p listen multiaddrs (TCP and QUIC).
	P2PAddrs []string `yaml:"p2p_addrs"`
	// AddrFile, when set, receives {"http","p2p","peer_id"} once the node
	// serves, written atomically.
	AddrFile string `yaml:"addr_file"`
	// Join is the URL of any member of an existing cluster. A node with no
	// state joins through it (with JoinToken) instead of bootstrapping a
	// cluster of its own. A node that has state ignores both.
	Join string `yaml:"join"`
	// JoinToken is a token from `hubmesh cluster join-token`.
	JoinToken string `yaml:"join_token"`
	// JoinTokenFile names a file holding the join token (a secret is better
	// kept in a file than on a command line). A joining node waits for the
	// file to appear, so a compose file can hand over the token that
	// another node writes with WriteJoinToken.
	JoinTokenFile string `yaml:"join_token_file"`
	// WriteJoinToken, when set, makes the node write a voter join token,
	// valid for a day, to this path (atomically, mode 0600) once the
	// cluster is up.
	WriteJoinToken string `yaml:"write_join_token"`
	// Role is voter (default) or mirror, which joins as a Raft non-voter.
	Role string `yaml:"role"`
	// Sync is the mirror sync policy: REPOSITORY[:TAG] patterns (path.Match
	// globs, e.g. "acme/*:v*", "library/*"). The node fetches and keeps the
	// blobs of every matching image as it is pushed anywhere in the
	// cluster, so that it can serve them while cut off. Any node may sync;
	// it is meant for mirrors.
	Sync []string `yaml:"sync"`
	// Upstreams are external registries this node caches on demand, as
	// NAME=URL (e.g. docker.io=https://registry-1.docker.io). /v2/NAME/...
	// maps to upstream NAME; any other repository missing here is looked
	// up on the default upstream (the one named docker.io, else the first),
	// so the node works as a Docker daemon registry-mirrors entry.
	Upstreams []string `yaml:"upstreams"`
	// UpstreamCredentialsFile names a YAML file of upstream credentials:
	// NAME: {username: ..., password: ...}.
	UpstreamCredentialsFile string `yaml:"upstream_credentials_file"`
	// UpstreamTTL is how long a cached tag is served before it is checked
	// against its upstream again.
	UpstreamTTL time.Duration `yaml:"upstream_ttl"`
	// Federate are other meshes (or OCI registries) whose namespaces this
	// mesh mirrors, as NAME=URL (e.g. hub-a=https://hub-a:5000). The
	// link's account on the other mesh comes from UpstreamCredentialsFile
	// under NAME; accounts of the two meshes stay separate.
	Federate []string `yaml:"federate"`
	// FederateNamespaces names the namespaces each link mirrors, as
	// NAME=NS[,NS...]; an element without '=' adds to the name before it.
	FederateNamespaces []string `yaml:"federate_namespaces"`
	// FederateSecretFile names a YAML file of webhook secrets, NAME:
	// secret: a push webhook of the other mesh posted to
	// /api/v1/federation/NAME/hook must be signed with it.
	FederateSecretFile string `yaml:"federate_secret_file"`
	// FederateInterval is how often the leader sweeps every link.
	FederateInterval time.Duration `yaml:"federate_interval"`
	// Replicas is the replication factor R: a push is acknowledged once
	// every blob it references is on min(R, voters) nodes.
	Replicas int `yaml:"replicas"`
	// RepairAfter is how long a member may stay unreachable before the
	// leader copies the blobs it held to other nodes.
	RepairAfter time.Duration `yaml:"repair_after"`
	// AdminPasswordFile names a file holding the password of the first site
	// administrator, "admin", created when this node bootstraps a new
	// cluster. Without it a random password is generated and logged once.
	// Ignored by a node that joins or already has state.
	AdminPasswordFile string `yaml:"admin_password_file"`
	// AuthService is the service name of the registry token service: the
	// audience of the tokens it issues and the service= of its challenges.
	AuthService string `yaml:"auth_service"`
	// WebhookAllowCIDRs are address ranges webhooks may reach although
	// the egress policy refuses them by default (loopback, private,
	// link-local), e.g. 10.0.0.0/8 for receivers on a private network.
	WebhookAllowCIDRs []string `yaml:"webhook_allow_cidrs"`
	// WebhookMaxFailures disables a webhook after this many consecutive
	// failed delivery attempts (with an audit event); 0 never does.
	WebhookMaxFailures int `yaml:"webhook_max_failures"`
	// Builder makes this node run automated builds: it claims queued
	// builds, builds them with the Docker daemon at BuilderDockerHost and
	// pushes the images into the mesh.
	Builder bool `yaml:"builder"`
	// BuilderDockerHost is the Docker Engine API endpoint of the builder,
	// unix:///path/to/docker.sock or tcp://host:port.
	BuilderDockerHost string `yaml:"builder_docker_host"`
	// BuilderConcurrency is how many builds the builder runs at once.
	BuilderConcurrency int `yaml:"builder_concurrency"`
	// BuilderRegistry is host:port of this node's registry as the Docker
	// daemon reaches it, to push built images and pull base images from
	// the mesh. Empty: the HTTP listen address, with an unspecified host
	// replaced by 127.0.0.1.
	BuilderRegistry string `yaml:"builder_registry"`
	// BuildLease is how long a claimed build stays with its builder
	// without a heartbeat (sent every third of it): a builder that dies
	// loses its builds to another builder after this long.
	BuildLease time.Duration `yaml:"build_lease"`
	// BuildTimeout bounds one build; a build that runs longer fails.
	BuildTimeout time.Duration `yaml:"build_timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text, json or auto (text on a terminal, else json).
	LogFormat string `yaml:"log_format"`
}

// Default returns the embedded defaults: data in ./data, HTTP on :5000,
// libp2p on port 4001 over TCP and QUIC.
func Default() Config {
	return Config{
		DataDir:            "./data",
		HTTPAddr:           ":5000",
		P2PAddrs:           []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
		Role:               "voter",
		Replicas:           2,
		RepairAfter:        5 * time.Minute,
		UpstreamTTL:        5 * time.Minute,
		FederateInterval:   time.Minute,
		AuthService:        "hubmesh",
		WebhookMaxFailures: 50,
		BuilderDockerHost:  build.DefaultEngineHost,
		BuilderConcurrency: 1,
		BuildLease:         30 * time.Second,
		BuildTimeout:       time.Hour,
		LogLevel:           "info",
		LogFormat:          "auto",
	}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.DataDir) == "" {
		errs = append(errs, errors.New("data-dir: must not be empty"))
	}
	if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("http-addr %q: want host:port", c.HTTPAddr))
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		errs = append(errs, fmt.Errorf("http-addr %q: bad port", c.HTTPAddr))
	}
	if len(c.P2PAddrs) == 0 {
		errs = append(errs, errors.New("p2p-addr: at least one multiaddr is needed"))
	}
	for _, a := range c.P2PAddrs {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			errs = append(errs, fmt.Errorf("p2p-addr %q: not a multiaddr: %v", a, err))
		}
	}
	switch c.Role {
	case "voter", "mirror":
	default:
		errs = append(errs, fmt.Errorf("role %q: want voter or mirror", c.Role))
	}
	if _, err := parseSyncPolicy(c.Sync); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseUpstreams(c.Upstreams); err != nil {
		errs = append(errs, err)
	}
	if c.UpstreamCredentialsFile != "" && len(c.Upstreams) == 0 && len(c.Federate) == 0 {
		errs = append(errs, errors.New("upstream-credentials-file: given without --upstream or --federate"))
	}
	if _, err := parseFederation(c.Federate, c.FederateNamespaces, c.Upstreams); err != nil {
		errs = append(errs, err)
	}
	if c.FederateSecretFile != "" && len(c.Federate) == 0 {
		errs = append(errs, errors.New("federate-secret-file: given without --federate"))
	}
	if c.FederateInterval <= 0 {
		errs = append(errs, fmt.Errorf("federate-interval %s: must be positive", c.FederateInterval))
	}
	if c.UpstreamTTL <= 0 {
		errs = append(errs, fmt.Errorf("upstream-ttl %s: must be positive", c.UpstreamTTL))
	}
	if c.RepairAfter <= 0 {
		errs = append(errs, fmt.Errorf("repair-after %s: must be positive", c.RepairAfter))
	}
	if c.Replicas < 1 {
		errs = append(errs, fmt.Errorf("replicas %d: want at least 1", c.Replicas))
	}
	if c.Join != "" {
		if u, err := url.Parse(c.Join); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			errs = append(errs, fmt.Errorf("join %q: want the URL of a member, such as http://node1:5000", c.Join))
		}
		if c.JoinToken == "" && c.JoinTokenFile == "" {
			errs = append(errs, errors.New("join-token: --join needs --join-token or --join-token-file (hubmesh cluster join-token prints one)"))
		}
	}
	if strings.TrimSpace(c.AuthService) == "" || strings.ContainsAny(c.AuthService, "\"\\ ") {
		errs = append(errs, fmt.Errorf("auth-service %q: want a name without spaces or quotes", c.AuthService))
	}
	if _, err := newEgress(c.WebhookAllowCIDRs); err != nil {
		errs = append(errs, err)
	}
	if c.WebhookMaxFailures < 0 {
		errs = append(errs, fmt.Errorf("webhook-max-failures %d: want 0 (never) or more", c.WebhookMaxFailures))
	}
	errs = append(errs, c.validateBuilder()...)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log-format %q: want auto, text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// validateBuilder checks the builder settings. They are checked whether
// or not Builder is set, so that a bad value is found before it is used.
func (c Config) validateBuilder() []error {
	var errs []error
	if c.Builder {
		if _, err := build.NewEngine(c.BuilderDockerHost); err != nil {
			errs = append(errs, fmt.Errorf("builder-docker-host: %v", err))
		}
	}
	if c.BuilderConcurrency < 1 || c.BuilderConcurrency > 64 {
		errs = append(errs, fmt.Errorf("builder-concurrency %d: want 1 to 64", c.BuilderConcurrency))
	}
	if c.BuilderRegistry != "" {
		host, port, err := net.SplitHostPort(c.BuilderRegistry)
		if err != nil || host == "" || strings.ContainsAny(c.BuilderRegistry, "/ ") {
			errs = append(errs, fmt.Errorf("builder-registry %q: want host:port as the Docker daemon reaches this node", c.BuilderRegistry))
		} else if _, err := net.LookupPort("tcp", port); err != nil {
			errs = append(errs, fmt.Errorf("builder-registry %q: bad port", c.BuilderRegistry))
		}
	}
	if c.BuildLease < time.Second {
		errs = append(errs, fmt.Errorf("build-lease %s: want at least 1s", c.BuildLease))
	}
	if c.BuildTimeout <= 0 {
		errs = append(errs, fmt.Errorf("build-timeout %s: must be positive", c.BuildTimeout))
	}
	return errs
}

// LoadFile decodes the YAML file at path onto c. Unknown keys are an error,
// so a misspelt setting is never silently ignored.
func (c *Config) LoadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file changes nothing
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}
