// A real OpenID Provider (panva/oidc-provider, OpenID Certified) for the gateway's SSO tests.
//
// Its own accounts and its own login form: the package's development login pages accept any
// password and are turned off. PKCE is required for every client. A fresh RSA signing key (new
// `kid`) is made at every start, so a restart on the same port is a key rotation.
//
// Environment: PORT (0: any free port), CLIENT_ID, CLIENT_SECRET, REDIRECT_URI,
// POST_LOGOUT_REDIRECT_URI (optional), CLAIMS_IN_ID_TOKEN ("1": e-mail and username are in the ID
// token, as Keycloak, Google and Azure AD do; otherwise only in userinfo, this package's default).
// Prints `READY <port> <kid>` on stdout once it listens.

import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const env = (name, fallback) => process.env[name] ?? fallback;
const clientId = env('CLIENT_ID', 'gateway');
const clientSecret = env('CLIENT_SECRET', 'gateway-secret');
const redirectUri = env('REDIRECT_URI', 'http://127.0.0.1:6900/oauth2/callback');
const postLogout = env('POST_LOGOUT_REDIRECT_URI', '');

// username -> account. Passwords are `<username>-idp-pw`.
const ACCOUNTS = {
  alice: { email: 'alice@example.com', email_verified: true, preferred_username: 'alice' },
  // The same address as alice's, never verified: must not become alice.
  mallory: { email: 'Alice@Example.com', email_verified: false, preferred_username: 'mallory' },
  // Verified, but at a domain the gateway does not allow.
  eve: { email: 'eve@evil.test', email_verified: true, preferred_username: 'eve' },
  // Verified, in the allowed domain, but unknown to users.yml.
  zoe: { email: 'zoe@example.com', email_verified: true, preferred_username: 'zoe' },
  // Disabled in users.yml.
  dave: { email: 'dave@example.com', email_verified: true, preferred_username: 'dave' },
  // A tricky address: two @.
  trick: { email: 'alice@example.com@evil.test', email_verified: true, preferred_username: 'trick' },
  // Upper-case spelling of alice's address, verified: the same person.
  alice2: { email: 'ALICE@example.COM', email_verified: true, preferred_username: 'alice2' },
};

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = privateKey.export({ format: 'jwk' });
jwk.kid = crypto.randomBytes(8).toString('hex');
jwk.alg = 'RS256';
jwk.use = 'sig';

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(env('PORT', '0')), '127.0.0.1', resolve));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: postLogout ? [postLogout] : [],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
  },
  conformIdTokenClaims: env('CLAIMS_IN_ID_TOKEN', '') !== '1',
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, name: id, ...account }) };
  },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, IdToken: 600, AccessToken: 600, AuthorizationCode: 60 },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginForm(uid, error) {
  return `<!doctype html><title>Test IdP sign in</title><h1>Test IdP</h1>
${error ? `<p class="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<input name="username"><input name="password" type="password"><button>Sign in</button></form>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  if (req.method === 'GET' && prompt.name === 'login') {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(loginForm(uid));
    return;
  }
  if (req.method === 'POST' && prompt.name === 'login' && req.url.endsWith('/login')) {
    const form = await readForm(req);
    const username = form.get('username') ?? '';
    if (!Object.hasOwn(ACCOUNTS, username) || form.get('password') !== `${username}-idp-pw`) {
      res.statusCode = 401;
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(loginForm(uid, 'wrong username or password'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    // The gateway is a first-party client: consent is granted without a page.
    let grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    if (prompt.details.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    const result = details.grantId ? {} : { consent: { grantId } };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
    return;
  }
  res.statusCode = 400;
  res.end('unexpected interaction');
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      console.error('interaction failed', err);
      if (!res.headersSent) res.statusCode = 500;
      res.end('interaction failed');
    });
    return;
  }
  callback(req, res);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(`READY ${port} ${jwk.kid}`);
