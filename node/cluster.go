package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/mesh"
	"github.com/hubmesh/hubmesh/registryapi"
)

// joinAdmitFor is how long a node that presented a valid join token may
// open connections before it is a member.
const joinAdmitFor = 2 * time.Minute

// cluster implements registryapi.Cluster over the Raft membership and the
// libp2p host.
type cluster struct {
	meta  *consensus.Node
	host  *mesh.Host
	store *mesh.Store
	log   *slog.Logger
	now   func() time.Time
}

var _ registryapi.Cluster = (*cluster)(nil)

// roleOf maps a Raft suffrage or a configured role (voter, mirror) to the
// member role: voter, or nonvoter for anything else.
func roleOf(suffrage string) string {
	if suffrage == consensus.RoleVoter {
		return consensus.RoleVoter
	}
	return consensus.RoleNonvoter
}

// Status implements registryapi.Cluster.
func (c *cluster) Status(ctx context.Context) (registryapi.ClusterStatus, error) {
	st := c.meta.Stats()
	info, _ := c.meta.Cluster()
	files, bytes := c.store.Size()
	out := registryapi.ClusterStatus{
		ClusterID: info.ID,
		ID:        c.meta.ID(),
		Leader:    st.LeaderID,
		Healthy:   st.LeaderID != "",
		Raft: registryapi.RaftStatus{
			State: st.State, Term: st.Term, LastIndex: st.LastLogIndex, AppliedIndex: st.AppliedIndex,
		},
		Blobs: registryapi.BlobStatus{Count: files, Bytes: bytes},
	}
	if st.LeaderID == "" {
		out.Offline, out.OfflineReason = true, offlineReason
	}
	servers, err := c.meta.Servers()
	if err != nil {
		return out, err
	}
	members := map[string]consensus.Member{}
	for _, m := range c.meta.Members() {
		members[m.ID] = m
	}
	alive := probePeers(ctx, c.host, c.meta.ID(), servers)
	for i, s := range servers {
		m := members[s.ID]
		delete(members, s.ID)
		state := "alive"
		if !alive[i] {
			state = "unreachable"
		}
		out.Members = append(out.Members, registryapi.ClusterMember{
			ID: s.ID, Role: roleOf(s.Suffrage), Leader: s.ID == st.LeaderID, HTTP: m.HTTP, P2P: m.P2P, State: state,
		})
	}
	for _, m := range members { // recorded but not (yet) in the Raft configuration
		out.Members = append(out.Members, registryapi.ClusterMember{
			ID: m.ID, Role: m.Role, HTTP: m.HTTP, P2P: m.P2P, State: "joining",
		})
	}
	return out, nil
}

// probeTimeout bounds how long a probe waits for a member this node is not
// connected to.
const probeTimeout = time.Second

// probePeers reports, for each server, whether this node (self) can reach
// it over libp2p now: connected already, or connecting within
// probeTimeout. Unconnected servers are dialled in parallel.
func probePeers(ctx context.Context, host *mesh.Host, self string, servers []consensus.Server) []bool {
	alive := make([]bool, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		if s.ID == self || host.Connected(s.ID) {
			alive[i] = true
			continue
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			alive[i] = host.Connect(pctx, s.ID) == nil
		})
	}
	wg.Wait()
	return alive
}

// CreateJoinToken implements registryapi.Cluster.
func (c *cluster) CreateJoinToken(ctx context.Context, role string, ttl time.Duration) (registryapi.JoinToken, error) {
	info, ok := c.meta.Cluster()
	if !ok {
		return registryapi.JoinToken{}, fmt.Errorf("the cluster is not initialised yet: %w", hubmesh.ErrUnavailable)
	}
	exp := c.now().Add(ttl).Truncate(time.Second)
	tok, err := signJoinToken(info.TokenKey, joinClaims{ClusterID: info.ID, Role: role, Expires: exp.Unix()})
	if err != nil {
		return registryapi.JoinToken{}, err
	}
	return registryapi.JoinToken{Token: tok, Role: role, ExpiresAt: exp.UTC()}, nil
}

// Join implements registryapi.Cluster: it checks the token, lets the new
// node's peer connect, and adds it to the Raft configuration.
func (c *cluster) Join(ctx context.Context, req registryapi.JoinRequest) (registryapi.JoinResponse, error) {
	info, ok := c.meta.Cluster()
	if !ok {
		return registryapi.JoinResponse{}, fmt.Errorf("the cluster is not initialised yet: %w", hubmesh.ErrUnavailable)
	}
	claims, err := verifyJoinToken(info.TokenKey, info.ID, req.Token, c.now())
	if err != nil {
		return registryapi.JoinResponse{}, err
	}
	role := "voter"
	if claims.Role == "mirror" || req.Member.Role == "nonvoter" || req.Member.Role == "mirror" {
		role = "nonvoter"
	}
	if _, err := c.host.AddAddrs(req.Member.P2P...); err != nil {
		return registryapi.JoinResponse{}, fmt.Errorf("member p2p addresses: %w", err)
	}
	c.host.Admit(req.Member.ID, c.now().Add(joinAdmitFor))
	m := consensus.Member{ID: req.Member.ID, HTTP: req.Member.HTTP, P2P: req.Member.P2P, Role: role}
	if err := c.meta.AddMember(ctx, m); err != nil {
		return registryapi.JoinResponse{}, err
	}
	c.log.Info("member joined", "id", m.ID, "role", role, "http", m.HTTP)
	resp := registryapi.JoinResponse{ClusterID: info.ID}
	for _, mm := range c.meta.Members() {
		resp.Members = append(resp.Members, registryapi.ClusterMember{ID: mm.ID, Role: mm.Role, HTTP: mm.HTTP, P2P: mm.P2P})
	}
	return resp, nil
}

// Leave implements registryapi.Cluster.
func (c *cluster) Leave(ctx context.Context) error {
	return c.meta.RemoveMember(ctx, c.meta.ID())
}

// RemoveMember implements registryapi.Cluster.
func (c *cluster) RemoveMember(ctx context.Context, id string) error {
	return c.meta.RemoveMember(ctx, id)
}

// syncMembers keeps the host's gater and peerstore in step with the
// member records in the replicated state, until ctx ends.
func syncMembers(ctx context.Context, meta *consensus.Node, host *mesh.Host, log *slog.Logger) error {
	apply := func() {
		members := meta.Members()
		ids := []string{meta.ID()}
		for _, m := range members {
			ids = append(ids, m.ID)
			if len(m.P2P) > 0 {
				if _, err := host.AddAddrs(m.P2P...); err != nil {
					log.Warn("member address", "id", m.ID, "err", err)
				}
			}
		}
		host.SetMembers(ids)
	}
	apply()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-meta.Changes():
			apply()
		}
	}
}

// joinCluster asks a member of an existing cluster, over its HTTP API, to
// add this node, and admits the members it names.
func joinCluster(ctx context.Context, cfg Config, self consensus.Member, host *mesh.Host) error {
	body, _ := json.Marshal(registryapi.JoinRequest{
		Token:  cfg.JoinToken,
		Member: registryapi.ClusterMember{ID: self.ID, Role: self.Role, HTTP: self.HTTP, P2P: self.P2P},
	})
	url := strings.TrimRight(cfg.Join, "/") + "/api/v1/cluster/join"
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("join %s: %w", cfg.Join, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("join %s: %w", cfg.Join, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Errors []struct{ Message string } `json:"errors"`
		}
		if json.Unmarshal(b, &e) == nil && len(e.Errors) > 0 {
			return fmt.Errorf("join %s refused: %s", cfg.Join, e.Errors[0].Message)
		}
		return fmt.Errorf("join %s: %s", cfg.Join, resp.Status)
	}
	var jr registryapi.JoinResponse
	if err := json.Unmarshal(b, &jr); err != nil {
		return fmt.Errorf("join %s: bad answer: %w", cfg.Join, err)
	}
	ids := []string{self.ID}
	for _, m := range jr.Members {
		ids = append(ids, m.ID)
		if _, err := host.AddAddrs(m.P2P...); err != nil {
			return fmt.Errorf("join: member %s: %w", m.ID, err)
		}
	}
	host.SetMembers(ids)
	return nil
}

// advertisedHTTP is the HTTP address other nodes and clients are told:
// the listen address, with an unspecified host replaced by the hostname.
func advertisedHTTP(ln net.Listener) string {
	host, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return ln.Addr().String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// tokenFileWait bounds how long a joining node waits for its token file.
const tokenFileWait = 2 * time.Minute

// readTokenFile waits for path to hold a token and returns it.
func readTokenFile(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenFileWait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			return string(bytes.TrimSpace(b)), nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("join-token-file: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("join-token-file %s: no token after %s", path, tokenFileWait)
		case <-tick.C:
		}
	}
}

// tokenFileTTL is the validity of a token written by --write-join-token;
// the file is rewritten every half of it, so it always holds a valid one.
const tokenFileTTL = 24 * time.Hour

// writeTokenFile keeps a valid voter join token in path (written
// atomically) until ctx ends. Run calls it once the cluster identity is
// applied here.
func (c *cluster) writeTokenFile(ctx context.Context, path string) error {
	refresh := time.NewTicker(tokenFileTTL / 2)
	defer refresh.Stop()
	for {
		tok, err := c.CreateJoinToken(ctx, "voter", tokenFileTTL)
		if err != nil {
			return fmt.Errorf("write-join-token: %w", err)
		}
		if err := writeFileAtomic(path, []byte(tok.Token+"\n"), 0o600); err != nil {
			return fmt.Errorf("write-join-token: %w", err)
		}
		c.log.Info("wrote join token", "path", path, "expires", tok.ExpiresAt)
		select {
		case <-ctx.Done():
			return nil
		case <-refresh.C:
		}
	}
}
