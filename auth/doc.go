// Package auth holds the authentication and authorization rules of a
// hubmesh node, as pure functions and small values with no I/O:
//
//   - the Docker token scope grammar (ParseScope, ParseScopes, Scope);
//   - the HTTP Authorization header (ParseAuthorization);
//   - argon2id password hashes in PHC form (HashPassword, CheckPassword);
//   - personal access token secrets (NewAccessToken, ParseAccessToken);
//   - the access policy that turns hubmesh.AccessFacts into a permission
//     and registry actions (Permission, Actions, Visible, CapActions,
//     Intersect);
//   - ES256 JWTs signed by the cluster's signing keys (KeySet, Claims,
//     NewSigningKey);
//   - the per-node failed-login limiter (Limiter).
//
// The facts it decides from (users, teams, keys) are read elsewhere and
// passed in; this package never reads the clock except where a caller
// leaves a timestamp unset, and never logs.
//
// It imports only the standard library, the root package hubmesh,
// github.com/golang-jwt/jwt/v5 and golang.org/x/crypto/argon2. It must not
// import consensus, mesh, registryapi, node, nor raft, libp2p or pebble:
// registryapi and node import it (registryapi -> auth -> hubmesh).
package auth
