package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

// adminUser is the first site administrator of a cluster.
const adminUser = "admin"

// bootstrapper is what bootstrapAccounts needs of the metadata plane.
type bootstrapper interface {
	Bootstrap(ctx context.Context, admin hubmesh.User, key hubmesh.SigningKey) error
	SigningKeys(ctx context.Context) ([]hubmesh.SigningKey, error)
}

// bootstrapAccounts creates the user admin and the first token signing key
// of a new cluster, once: the command is refused (ErrExists) when a key is
// already there, so a restart, or a second node racing, changes nothing.
// The password comes from passwordFile, or is generated and logged once,
// by the node whose command created the account.
func (n *Node) bootstrapAccounts(ctx context.Context, meta bootstrapper, passwordFile string) error {
	keys, err := meta.SigningKeys(ctx)
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		return nil
	}
	password, generated := "", false
	if passwordFile != "" {
		password, err = readPasswordFile(passwordFile)
		if err != nil {
			return err
		}
	} else {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		password, generated = base64.RawURLEncoding.EncodeToString(b), true
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		return fmt.Errorf("admin password: %w", err)
	}
	now := time.Now().UTC()
	key, err := auth.NewSigningKey(now)
	if err != nil {
		return err
	}
	admin := hubmesh.User{Name: adminUser, PasswordHash: hash, Admin: true, Created: now, PasswordChanged: now}
	err = meta.Bootstrap(ctx, admin, key)
	if errors.Is(err, hubmesh.ErrExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create the first administrator: %w", err)
	}
	if generated {
		// Printed once, by the node that created the account; nowhere else.
		n.log.Warn("created the administrator account; change this password",
			"username", adminUser, "password", password)
	} else {
		n.log.Info("created the administrator account", "username", adminUser, "password_file", passwordFile)
	}
	return nil
}

// readPasswordFile reads a secret from a file: the first line, without
// surrounding whitespace.
func readPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin-password-file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSpace(pw)
	if pw == "" {
		return "", fmt.Errorf("admin-password-file %s: empty", path)
	}
	return pw, nil
}
