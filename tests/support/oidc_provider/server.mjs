// panva/oidc-provider (OpenID Certified) as a real peer for authproxy's tests. Test-only.
//
//   node server.mjs CONFIG.json        (or AUTHPROXY_OIDC_PROVIDER_CONFIG=CONFIG.json)
//
// CONFIG.json (written by tests/support/node_provider.py):
//   {"issuer": "http://127.0.0.2:PORT", "host": "127.0.0.2", "port": PORT,
//    "clients": [oidc-provider client metadata...], "users": {"alice": {claims...}},
//    "access_token_ttl": 5, "id_token_ttl": 3600, "refresh_token_ttl": 86400}
//
// Choices that differ from oidc-provider's defaults, each for a reason in docs/testing.md:
// - PKCE is required for every client (authproxy always sends S256).
// - rotateRefreshToken() => true: every refresh rotates, so a reuse is detectable by the tests.
// - issueRefreshToken: every client registered for the refresh_token grant gets one, with or
//   without prompt=consent (the default drops offline_access without it).
// - The SSRF guard of outgoing requests is relaxed for loopback targets only, so back-channel
//   logout can reach a relying party on 127.x.
// - GET /__test/counters answers {"refresh_grants", "code_grants", "revocations", ...}.
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import process from 'node:process';

import Provider from 'oidc-provider';

const configPath = process.argv[2] || process.env.AUTHPROXY_OIDC_PROVIDER_CONFIG;
if (!configPath) {
  console.error('usage: node server.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));

const counters = {
  token_requests: 0,
  code_grants: 0,
  refresh_grants: 0,
  revocations: 0,
  grant_revocations: 0,
  userinfo_requests: 0,
  end_sessions: 0,
  backchannel_logouts: 0,
  backchannel_errors: 0,
};

function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  // the first key of an alg signs; RS256 stays the ID token default
  return [
    { ...rsa, kid: `rsa-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'ES256' },
  ];
}

function accountClaims(login) {
  const known = (config.users || {})[login];
  // devInteractions accepts any login: unknown ones get a plausible identity without groups
  return {
    email: `${login}@example.com`,
    email_verified: true,
    name: login,
    preferred_username: login,
    groups: [],
    ...known,
    sub: login,
  };
}

function isLoopback(url) {
  try {
    const { hostname } = new URL(url);
    return /^127\.\d+\.\d+\.\d+$/.test(hostname) || hostname === 'localhost' || hostname === '[::1]';
  } catch {
    return false;
  }
}

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: signingKeys() },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => accountClaims(sub),
  }),
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  // claims of the granted scopes go into the ID token too, not only to userinfo
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  ttl: {
    AccessToken: config.access_token_ttl ?? 5,
    AuthorizationCode: 60,
    IdToken: config.id_token_ttl ?? 3600,
    RefreshToken: config.refresh_token_ttl ?? 86400,
    Grant: 86400,
    Interaction: 3600,
    Session: 86400,
  },
  rotateRefreshToken: () => true,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  fetch: (url, options) => {
    if (isLoopback(url)) {
      // the SSRF dispatcher destroys sockets to special-use addresses; tests live on 127.x
      const { dispatcher, ...rest } = options;
      return globalThis.fetch(url, rest);
    }
    return globalThis.fetch(url, options);
  },
});

provider.on('grant.success', (ctx) => {
  const grantType = ctx.oidc.params?.grant_type;
  if (grantType === 'authorization_code') counters.code_grants += 1;
  if (grantType === 'refresh_token') counters.refresh_grants += 1;
});
provider.on('grant.revoked', () => { counters.grant_revocations += 1; });
provider.on('end_session.success', () => { counters.end_sessions += 1; });
provider.on('backchannel.success', () => { counters.backchannel_logouts += 1; });
provider.on('backchannel.error', (ctx, error, client) => {
  counters.backchannel_errors += 1;
  console.error(`back-channel logout to ${client.clientId} failed: ${error.message}`);
});

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/counters') {
    if (ctx.method === 'DELETE') {
      for (const key of Object.keys(counters)) counters[key] = 0;
    }
    ctx.type = 'json';
    ctx.body = counters;
    return;
  }
  await next();
  const route = ctx.oidc?.route;
  if (route === 'token') counters.token_requests += 1;
  if (route === 'revocation' && ctx.status === 200) counters.revocations += 1;
  if (route === 'userinfo') counters.userinfo_requests += 1;
});

const server = provider.listen(config.port, config.host, () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
