package consensus

import (
	_ "crypto/sha256" // digest algorithms must be linked for go-digest
	_ "crypto/sha512"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Type identifies the kind of a command in the Raft log. The numbers are
// part of the log format: they are explicit, append-only and never reused,
// even when a command is retired.
type Type uint16

// Command types. Add new ones at the end with the next free number.
const (
	TypePutManifest    Type = 1
	TypeDeleteManifest Type = 2
	TypeDeleteTag      Type = 3
	TypeLinkBlobs      Type = 4
	TypeMountBlob      Type = 5
	TypeUnlinkBlob     Type = 6
	TypeInitCluster    Type = 7
	TypeSetMember      Type = 8
	TypeRemoveMember   Type = 9
	TypeAddReplica     Type = 10

	TypeBootstrap         Type = 11
	TypeCreateUser        Type = 12
	TypeUpdateUser        Type = 13
	TypeDeleteUser        Type = 14
	TypeCreateToken       Type = 15
	TypeDeleteToken       Type = 16
	TypeTouchTokens       Type = 17
	TypeCreateOrg         Type = 18
	TypeDeleteOrg         Type = 19
	TypeCreateTeam        Type = 20
	TypeDeleteTeam        Type = 21
	TypeAddTeamMember     Type = 22
	TypeRemoveTeamMember  Type = 23
	TypeSetTeamPermission Type = 24
	TypeCreateRepository  Type = 25
	TypeUpdateRepository  Type = 26
	TypeDeleteRepository  Type = 27
	TypeSetNamespace      Type = 28
	TypeAddSigningKey     Type = 29
	TypeSetSettings       Type = 30
	TypeAppendAudit       Type = 31

	TypeStar        Type = 32
	TypeUnstar      Type = 33
	TypeAddPulls    Type = 34
	TypeSetOfficial Type = 35

	TypeCreateWebhook        Type = 36
	TypeUpdateWebhook        Type = 37
	TypeDeleteWebhook        Type = 38
	TypeRecordWebhookAttempt Type = 39
	TypeSetWebhookCallback   Type = 40
	TypeRedeliverWebhook     Type = 41

	TypeSetBuildSettings    Type = 42
	TypeDeleteBuildSettings Type = 43
	TypeQueueBuilds         Type = 44
	TypeClaimBuild          Type = 45
	TypeUpdateBuild         Type = 46
	TypeCancelBuild         Type = 47
)

// envelopeVersion is the first byte of every encoded command. A node
// refuses (and, inside the FSM, halts on) any other version.
const envelopeVersion byte = 1

// envelopeHeader is [version byte][type uint16 big-endian].
const envelopeHeader = 3

// String names the type for logs and errors.
func (t Type) String() string {
	switch t {
	case TypePutManifest:
		return "PutManifest"
	case TypeDeleteManifest:
		return "DeleteManifest"
	case TypeDeleteTag:
		return "DeleteTag"
	case TypeLinkBlobs:
		return "LinkBlobs"
	case TypeMountBlob:
		return "MountBlob"
	case TypeUnlinkBlob:
		return "UnlinkBlob"
	case TypeInitCluster:
		return "InitCluster"
	case TypeSetMember:
		return "SetMember"
	case TypeRemoveMember:
		return "RemoveMember"
	case TypeAddReplica:
		return "AddReplica"
	case TypeBootstrap:
		return "Bootstrap"
	case TypeCreateUser:
		return "CreateUser"
	case TypeUpdateUser:
		return "UpdateUser"
	case TypeDeleteUser:
		return "DeleteUser"
	case TypeCreateToken:
		return "CreateToken"
	case TypeDeleteToken:
		return "DeleteToken"
	case TypeTouchTokens:
		return "TouchTokens"
	case TypeCreateOrg:
		return "CreateOrg"
	case TypeDeleteOrg:
		return "DeleteOrg"
	case TypeCreateTeam:
		return "CreateTeam"
	case TypeDeleteTeam:
		return "DeleteTeam"
	case TypeAddTeamMember:
		return "AddTeamMember"
	case TypeRemoveTeamMember:
		return "RemoveTeamMember"
	case TypeSetTeamPermission:
		return "SetTeamPermission"
	case TypeCreateRepository:
		return "CreateRepository"
	case TypeUpdateRepository:
		return "UpdateRepository"
	case TypeDeleteRepository:
		return "DeleteRepository"
	case TypeSetNamespace:
		return "SetNamespace"
	case TypeAddSigningKey:
		return "AddSigningKey"
	case TypeSetSettings:
		return "SetSettings"
	case TypeAppendAudit:
		return "AppendAudit"
	case TypeStar:
		return "Star"
	case TypeUnstar:
		return "Unstar"
	case TypeAddPulls:
		return "AddPulls"
	case TypeSetOfficial:
		return "SetOfficial"
	case TypeCreateWebhook:
		return "CreateWebhook"
	case TypeUpdateWebhook:
		return "UpdateWebhook"
	case TypeDeleteWebhook:
		return "DeleteWebhook"
	case TypeRecordWebhookAttempt:
		return "RecordWebhookAttempt"
	case TypeSetWebhookCallback:
		return "SetWebhookCallback"
	case TypeRedeliverWebhook:
		return "RedeliverWebhook"
	case TypeSetBuildSettings:
		return "SetBuildSettings"
	case TypeDeleteBuildSettings:
		return "DeleteBuildSettings"
	case TypeQueueBuilds:
		return "QueueBuilds"
	case TypeClaimBuild:
		return "ClaimBuild"
	case TypeUpdateBuild:
		return "UpdateBuild"
	case TypeCancelBuild:
		return "CancelBuild"
	}
	return fmt.Sprintf("Type(%d)", uint16(t))
}

// Command is a change to the replicated state. The set of commands is
// closed: only the types of this package implement it.
type Command interface {
	// Type is the command's number in the log format.
	Type() Type
	// validate checks what can be checked without state. The proposer calls
	// it before a command enters the log, and the FSM again before applying.
	validate() error
	// apply validates against the state in tx, then writes. It must not write
	// anything when it returns an error, and must be deterministic.
	apply(tx *txn) (any, error)
}

// newCommand maps each type to a constructor for decoding. It is the
// dispatch table of the FSM: a type missing here is rejected by Decode.
var newCommand = map[Type]func() Command{
	TypePutManifest:    func() Command { return new(PutManifest) },
	TypeDeleteManifest: func() Command { return new(DeleteManifest) },
	TypeDeleteTag:      func() Command { return new(DeleteTag) },
	TypeLinkBlobs:      func() Command { return new(LinkBlobs) },
	TypeMountBlob:      func() Command { return new(MountBlob) },
	TypeUnlinkBlob:     func() Command { return new(UnlinkBlob) },
	TypeInitCluster:    func() Command { return new(InitCluster) },
	TypeSetMember:      func() Command { return new(SetMember) },
	TypeRemoveMember:   func() Command { return new(RemoveMember) },
	TypeAddReplica:     func() Command { return new(AddReplica) },

	TypeBootstrap:         func() Command { return new(Bootstrap) },
	TypeCreateUser:        func() Command { return new(CreateUser) },
	TypeUpdateUser:        func() Command { return new(UpdateUser) },
	TypeDeleteUser:        func() Command { return new(DeleteUser) },
	TypeCreateToken:       func() Command { return new(CreateToken) },
	TypeDeleteToken:       func() Command { return new(DeleteToken) },
	TypeTouchTokens:       func() Command { return new(TouchTokens) },
	TypeCreateOrg:         func() Command { return new(CreateOrg) },
	TypeDeleteOrg:         func() Command { return new(DeleteOrg) },
	TypeCreateTeam:        func() Command { return new(CreateTeam) },
	TypeDeleteTeam:        func() Command { return new(DeleteTeam) },
	TypeAddTeamMember:     func() Command { return new(AddTeamMember) },
	TypeRemoveTeamMember:  func() Command { return new(RemoveTeamMember) },
	TypeSetTeamPermission: func() Command { return new(SetTeamPermission) },
	TypeCreateRepository:  func() Command { return new(CreateRepository) },
	TypeUpdateRepository:  func() Command { return new(UpdateRepository) },
	TypeDeleteRepository:  func() Command { return new(DeleteRepository) },
	TypeSetNamespace:      func() Command { return new(SetNamespace) },
	TypeAddSigningKey:     func() Command { return new(AddSigningKey) },
	TypeSetSettings:       func() Command { return new(SetSettings) },
	TypeAppendAudit:       func() Command { return new(AppendAudit) },

	TypeStar:        func() Command { return new(Star) },
	TypeUnstar:      func() Command { return new(Unstar) },
	TypeAddPulls:    func() Command { return new(AddPulls) },
	TypeSetOfficial: func() Command { return new(SetOfficial) },

	TypeCreateWebhook:        func() Command { return new(CreateWebhook) },
	TypeUpdateWebhook:        func() Command { return new(UpdateWebhook) },
	TypeDeleteWebhook:        func() Command { return new(DeleteWebhook) },
	TypeRecordWebhookAttempt: func() Command { return new(RecordWebhookAttempt) },
	TypeSetWebhookCallback:   func() Command { return new(SetWebhookCallback) },
	TypeRedeliverWebhook:     func() Command { return new(RedeliverWebhook) },

	TypeSetBuildSettings:    func() Command { return new(SetBuildSettings) },
	TypeDeleteBuildSettings: func() Command { return new(DeleteBuildSettings) },
	TypeQueueBuilds:         func() Command { return new(QueueBuilds) },
	TypeClaimBuild:          func() Command { return new(ClaimBuild) },
	TypeUpdateBuild:         func() Command { return new(UpdateBuild) },
	TypeCancelBuild:         func() Command { return new(CancelBuild) },
}

// Encode returns the envelope of c: [version][type uint16 BE][JSON payload].
func Encode(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("encode command: %w: nil command", hubmesh.ErrInvalid)
	}
	if _, ok := newCommand[c.Type()]; !ok {
		return nil, fmt.Errorf("encode command: %w: unknown type %v", hubmesh.ErrInvalid, c.Type())
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %v: %w", c.Type(), err)
	}
	b := make([]byte, envelopeHeader, envelopeHeader+len(payload))
	b[0] = envelopeVersion
	binary.BigEndian.PutUint16(b[1:], uint16(c.Type()))
	return append(b, payload...), nil
}

// Decode parses an envelope produced by Encode. It fails on a short
// envelope, an unknown version or type, and a payload that is not the JSON
// of its type.
func Decode(b []byte) (Command, error) {
	if len(b) < envelopeHeader {
		return nil, fmt.Errorf("decode command: %w: envelope of %d bytes", hubmesh.ErrInvalid, len(b))
	}
	if b[0] != envelopeVersion {
		return nil, fmt.Errorf("decode command: %w: envelope version %d", hubmesh.ErrInvalid, b[0])
	}
	t := Type(binary.BigEndian.Uint16(b[1:]))
	mk, ok := newCommand[t]
	if !ok {
		return nil, fmt.Errorf("decode command: %w: unknown type %d", hubmesh.ErrInvalid, uint16(t))
	}
	c := mk()
	if err := json.Unmarshal(b[envelopeHeader:], c); err != nil {
		return nil, fmt.Errorf("decode %v: %w: %w", t, hubmesh.ErrInvalid, err)
	}
	return c, nil
}

// PutManifest stores a manifest in its repository and points each tag at
// it. The first manifest creates the repository, private when its
// namespace's DefaultPrivate says so; each later one moves the
// repository's Updated time forward to the manifest's Created time.
type PutManifest struct {
	Manifest hubmesh.Manifest `json:"manifest"`
	Tags     []string         `json:"tags,omitempty"`
	// Pusher is the user who pushed (webhook payloads name it).
	Pusher string `json:"pusher,omitempty"`
}

// DeleteManifest removes a manifest, the tags pointing at it and its
// referrers entry.
type DeleteManifest struct {
	Repo   string        `json:"repo"`
	Digest digest.Digest `json:"digest"`
	// At and Actor say when and by whom (for webhook events).
	At    time.Time `json:"at,omitzero"`
	Actor string    `json:"actor,omitempty"`
}

// DeleteTag removes one tag; the manifest stays.
type DeleteTag struct {
	Repo string `json:"repo"`
	Tag  string `json:"tag"`
	// At and Actor say when and by whom (for webhook events).
	At    time.Time `json:"at,omitzero"`
	Actor string    `json:"actor,omitempty"`
}

// LinkBlobs records blobs that Node holds in its content store and links
// them into Repo. It is a batch so that a push costs few commands.
type LinkBlobs struct {
	Repo  string               `json:"repo"`
	Blobs []hubmesh.Descriptor `json:"blobs"`
	// Node is the ID of the node that stored the content; it is added to
	// each blob's replicas. Empty links blobs that no node holds yet: a
	// pull-through cache links the blobs of a manifest it fetched before
	// their content arrives, and records each holder with AddReplica once
	// the content is stored. A new blob record then has no replicas.
	Node string `json:"node"`
}

// MountBlob links a blob that is already linked elsewhere into Repo. The
// result of applying it is the hubmesh.Descriptor now linked.
type MountBlob struct {
	Repo string `json:"repo"`
	// From is the repository to mount from; empty means any repository
	// (the blob only needs a blob record).
	From   string        `json:"from,omitempty"`
	Digest digest.Digest `json:"digest"`
	// Node, when set, is added to the blob's replicas.
	Node string `json:"node,omitempty"`
}

// UnlinkBlob removes a blob's link from Repo. The blob record stays.
type UnlinkBlob struct {
	Repo   string        `json:"repo"`
	Digest digest.Digest `json:"digest"`
}

// Type implements Command.
func (*PutManifest) Type() Type { return TypePutManifest }

// Type implements Command.
func (*DeleteManifest) Type() Type { return TypeDeleteManifest }

// Type implements Command.
func (*DeleteTag) Type() Type { return TypeDeleteTag }

// Type implements Command.
func (*LinkBlobs) Type() Type { return TypeLinkBlobs }

// Type implements Command.
func (*MountBlob) Type() Type { return TypeMountBlob }

// Type implements Command.
func (*UnlinkBlob) Type() Type { return TypeUnlinkBlob }

// Limits on names, from the OCI distribution spec.
const (
	maxRepoLen = 255
	maxNodeLen = 256
)

var (
	repoRe = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRe  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

func checkRepo(repo string) error {
	if len(repo) == 0 || len(repo) > maxRepoLen || !repoRe.MatchString(repo) {
		return fmt.Errorf("%w: repository name %q", hubmesh.ErrInvalid, repo)
	}
	return nil
}

func checkTag(tag string) error {
	if !tagRe.MatchString(tag) {
		return fmt.Errorf("%w: tag %q", hubmesh.ErrInvalid, tag)
	}
	return nil
}

func checkDigest(what string, d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %s %q: %v", hubmesh.ErrInvalid, what, d, err)
	}
	return nil
}

func checkNode(node string, required bool) error {
	if (required && node == "") || len(node) > maxNodeLen {
		return fmt.Errorf("%w: node id %q", hubmesh.ErrInvalid, node)
	}
	return nil
}

func (c *PutManifest) validate() error {
	m := &c.Manifest
	if err := checkRepo(m.Repo); err != nil {
		return err
	}
	if err := checkDigest("manifest digest", m.Digest); err != nil {
		return err
	}
	if len(m.Payload) == 0 {
		return fmt.Errorf("%w: manifest %s: empty payload", hubmesh.ErrInvalid, m.Digest)
	}
	if len(m.Payload) > hubmesh.MaxManifestSize {
		return fmt.Errorf("manifest %s: %w: %d bytes exceeds %d", m.Digest, hubmesh.ErrSizeInvalid, len(m.Payload), hubmesh.MaxManifestSize)
	}
	if m.Digest.Algorithm().FromBytes(m.Payload) != m.Digest {
		return fmt.Errorf("manifest %s: %w", m.Digest, hubmesh.ErrDigestMismatch)
	}
	if m.Subject != "" {
		if err := checkDigest("subject", m.Subject); err != nil {
			return err
		}
	}
	for _, b := range m.Blobs {
		if err := checkDigest("blob", b.Digest); err != nil {
			return err
		}
	}
	for _, ch := range m.Children {
		if err := checkDigest("child manifest", ch.Digest); err != nil {
			return err
		}
	}
	for _, t := range c.Tags {
		if err := checkTag(t); err != nil {
			return err
		}
	}
	return nil
}

func (c *DeleteManifest) validate() error {
	if err := checkRepo(c.Repo); err != nil {
		return err
	}
	return checkDigest("manifest digest", c.Digest)
}

func (c *DeleteTag) validate() error {
	if err := checkRepo(c.Repo); err != nil {
		return err
	}
	return checkTag(c.Tag)
}

func (c *LinkBlobs) validate() error {
	if err := checkRepo(c.Repo); err != nil {
		return err
	}
	if err := checkNode(c.Node, false); err != nil {
		return err
	}
	if len(c.Blobs) == 0 {
		return fmt.Errorf("%w: no blobs to link", hubmesh.ErrInvalid)
	}
	for _, b := range c.Blobs {
		if err := checkDigest("blob", b.Digest); err != nil {
			return err
		}
		if b.Size < 0 {
			return fmt.Errorf("blob %s: %w: negative size %d", b.Digest, hubmesh.ErrSizeInvalid, b.Size)
		}
	}
	return nil
}

func (c *MountBlob) validate() error {
	if err := checkRepo(c.Repo); err != nil {
		return err
	}
	if c.From != "" {
		if err := checkRepo(c.From); err != nil {
			return err
		}
	}
	if err := checkNode(c.Node, false); err != nil {
		return err
	}
	return checkDigest("blob", c.Digest)
}

func (c *UnlinkBlob) validate() error {
	if err := checkRepo(c.Repo); err != nil {
		return err
	}
	return checkDigest("blob", c.Digest)
}
