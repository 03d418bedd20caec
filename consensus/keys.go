package consensus

import (
	"encoding/binary"

	"github.com/opencontainers/go-digest"
)

// Key layout of the FSM pebble database (Dir/fsm). Repository names,
// tags, digests, user, organization and team names and token ids never
// contain a NUL byte (the FSM validates them before writing), so NUL
// separates the parts of a composite key and a prefix scan over
// "<prefix><repo>\x00" never strays into a repository whose name merely
// starts with <repo>. The repositories of a namespace <ns> are the keys
// under "<prefix><ns>/". Every listing is the lexical order of its keys.
//
//	meta/
//	├── applied                         uint64 BE: index of the last applied Raft entry
//	├── cluster                         JSON ClusterInfo: cluster ID and join-token key (InitCluster)
//	├── settings                        JSON hubmesh.Settings (SetSettings; absent: zero settings)
//	├── auditfloor                      id of the oldest audit event kept, once the log has been trimmed
//	└── count/
//	    ├── repositories                uint64 BE: number of repo/ keys
//	    ├── manifests                   uint64 BE: number of manifest/ keys
//	    ├── blobs                       uint64 BE: number of blob/ keys
//	    └── audit                       uint64 BE: number of audit/ keys
//	repo/<repo>                         JSON repoRecord: visibility, descriptions, created/updated,
//	                                    official flag, star and pull counts
//	manifest/<repo>\x00<digest>         [uint32 BE n][n bytes JSON hubmesh.Manifest without payload][payload bytes]
//	tag/<repo>\x00<tag>                 digest string the tag points at
//	tagrev/<repo>\x00<digest>\x00<tag>  empty: the tags of a manifest (for DeleteManifest)
//	referrer/<repo>\x00<subject>\x00<referrer>
//	                                    JSON hubmesh.Descriptor of the referrer
//	blob/<digest>                       JSON blobRecord: size and replica node IDs
//	link/<repo>\x00<digest>             JSON hubmesh.Descriptor: blob reachable in repo
//	member/<node id>                    JSON Member: a node's addresses and role
//	user/<name>                         JSON hubmesh.User (password hash included)
//	token/<id>                          JSON hubmesh.AccessToken (hash of the secret, never the secret)
//	usertoken/<user>\x00<id>            empty: the tokens of a user
//	org/<name>                          JSON hubmesh.Org; a name is in user/ or org/, never both
//	team/<org>\x00<team>                JSON teamRecord: description (members are the keys below)
//	teammember/<org>\x00<team>\x00<user> empty: a member of a team
//	userteam/<user>\x00<org>\x00<team>  empty: reverse of teammember/ (a user's teams, by org)
//	grant/<org>\x00<team>\x00<repo>     permission name ("read", "write", "admin") of a team on a repo
//	grantrepo/<repo>\x00<org>\x00<team> empty: reverse of grant/ (the grants on a repo)
//	ns/<name>                           JSON nsRecord: settings of a user or org namespace
//	key/<kid>                           JSON hubmesh.SigningKey: token signing keys
//	audit/<id>                          JSON hubmesh.AuditEvent; ids sort by time (newest MaxAuditEvents kept)
//	star/<repo>\x00<user>               time starred (RFC 3339): who starred a repository (social.go)
//	starred/<user>\x00<repo>            the same time: what a user starred
//	pull/<repo>\x00<ref>                uint64 BE unix ns: last pull by tag or digest (AddPulls)
//	official/<ns>                       empty: every repository of namespace ns is official
//	hook/<id>                           JSON hubmesh.Webhook, secret included (webhook.go)
//	hookrepo/<repo>\x00<name>           id of a repository webhook
//	hookorg/<org>\x00<name>             id of an organization webhook
//	delivery/<hook id>\x00<event id>    JSON hubmesh.WebhookDelivery: the outbox and delivery log
//	hookdue/<16 hex ns>\x00<delivery id> empty: a pending delivery, by next attempt time
//	buildset/<repo>                     JSON hubmesh.BuildSettings, secrets included (build.go)
//	build/<id>                          JSON hubmesh.Build; ids are 20 hex digits in log order
//	buildrepo/<repo>\x00<id>            empty: the builds of a repository (at most MaxBuildsPerRepo)
//	buildopen/<id>                      empty: an unfinished build (the builders' queue)
//
// The Raft log and stable store live in a separate pebble database
// (Dir/raft, see logstore.go); snapshots are files in Dir/snapshots.
var (
	keyApplied        = []byte("meta/applied")
	keyCountRepos     = []byte("meta/count/repositories")
	keyCountManifests = []byte("meta/count/manifests")
	keyCountBlobs     = []byte("meta/count/blobs")
	keyCluster        = []byte("meta/cluster")
	keySettings       = []byte("meta/settings")
	keyCountAudit     = []byte("meta/count/audit")
	keyAuditFloor     = []byte("meta/auditfloor")

	prefixRepo     = []byte("repo/")
	prefixManifest = []byte("manifest/")
	prefixTag      = []byte("tag/")
	prefixTagRev   = []byte("tagrev/")
	prefixReferrer = []byte("referrer/")
	prefixBlob     = []byte("blob/")
	prefixLink     = []byte("link/")
	prefixMember   = []byte("member/")

	prefixUser       = []byte("user/")
	prefixToken      = []byte("token/")
	prefixUserToken  = []byte("usertoken/")
	prefixOrg        = []byte("org/")
	prefixTeam       = []byte("team/")
	prefixTeamMember = []byte("teammember/")
	prefixUserTeam   = []byte("userteam/")
	prefixGrant      = []byte("grant/")
	prefixGrantRepo  = []byte("grantrepo/")
	prefixNamespace  = []byte("ns/")
	prefixSigningKey = []byte("key/")
	prefixAudit      = []byte("audit/")
)

const sep = 0x00

// key joins a prefix and parts separated by NUL.
func key(prefix []byte, parts ...string) []byte {
	n := len(prefix)
	for _, p := range parts {
		n += len(p) + 1
	}
	k := make([]byte, 0, n)
	k = append(k, prefix...)
	for i, p := range parts {
		if i > 0 {
			k = append(k, sep)
		}
		k = append(k, p...)
	}
	return k
}

// scope is the prefix of every key below parts: key(prefix, parts...)+NUL.
func scope(prefix []byte, parts ...string) []byte {
	return append(key(prefix, parts...), sep)
}

func repoKey(repo string) []byte { return key(prefixRepo, repo) }

func manifestKey(repo string, d digest.Digest) []byte {
	return key(prefixManifest, repo, d.String())
}

func tagKey(repo, tag string) []byte { return key(prefixTag, repo, tag) }

func tagRevKey(repo string, d digest.Digest, tag string) []byte {
	return key(prefixTagRev, repo, d.String(), tag)
}

func referrerKey(repo string, subject, referrer digest.Digest) []byte {
	return key(prefixReferrer, repo, subject.String(), referrer.String())
}

func blobKey(d digest.Digest) []byte { return key(prefixBlob, d.String()) }

func linkKey(repo string, d digest.Digest) []byte { return key(prefixLink, repo, d.String()) }

func memberKey(id string) []byte { return key(prefixMember, id) }

func userKey(name string) []byte { return key(prefixUser, name) }

func accessTokenKey(id string) []byte { return key(prefixToken, id) }

func userTokenKey(user, id string) []byte { return key(prefixUserToken, user, id) }

func orgKey(name string) []byte { return key(prefixOrg, name) }

func teamKey(org, team string) []byte { return key(prefixTeam, org, team) }

func teamMemberKey(org, team, user string) []byte { return key(prefixTeamMember, org, team, user) }

func userTeamKey(user, org, team string) []byte { return key(prefixUserTeam, user, org, team) }

func grantKey(org, team, repo string) []byte { return key(prefixGrant, org, team, repo) }

func grantRepoKey(repo, org, team string) []byte { return key(prefixGrantRepo, repo, org, team) }

func nsKey(name string) []byte { return key(prefixNamespace, name) }

func signingKeyKey(id string) []byte { return key(prefixSigningKey, id) }

func auditKey(id string) []byte { return key(prefixAudit, id) }

// prefixEnd returns the smallest key greater than every key that starts
// with p, for use as an exclusive upper bound.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// after returns the smallest key strictly greater than k.
func after(k []byte) []byte { return append(append([]byte(nil), k...), sep) }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func readU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
