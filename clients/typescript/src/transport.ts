// The gRPC transport: HTTP/2 to the address, TLS or plaintext, and the bearer token on every call.

import { readFileSync } from "node:fs";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

/** TLS settings. `true` means TLS with Node's built-in root certificates. */
export type TlsOptions =
  | boolean
  | {
      /** A PEM file of CA certificates to trust instead of the built-in roots. */
      caFile?: string;
      /** PEM CA certificates, as an alternative to caFile. */
      ca?: string | Buffer;
      /** The name to verify the server certificate against (default: the address's host). */
      serverName?: string;
    };

/** How to reach the service. */
export interface ConnectionOptions {
  /**
   * `host:port` (plaintext unless `tls` is set), or a URL: `http://host:port` for plaintext,
   * `https://host:port` for TLS.
   */
  address: string;
  /** Sent as `authorization: Bearer <token>` metadata on every call. */
  token?: string;
  /** TLS: off by default for `host:port` addresses. */
  tls?: TlsOptions;
  /** Extra connect interceptors, run after the one that adds the token. */
  interceptors?: Interceptor[];
}

/** A transport and the way to close its connection. */
export interface Connection {
  transport: Transport;
  /** Closes the HTTP/2 connection; calls still open fail with Code.Canceled. */
  close(): void;
}

/** Creates the HTTP/2 gRPC transport for `options`. */
export function createTransport(options: ConnectionOptions): Connection {
  const tls = options.tls ?? false;
  const baseUrl = baseUrlFor(options.address, tls !== false);
  const interceptors: Interceptor[] = [];
  if (options.token !== undefined && options.token !== "") {
    interceptors.push(bearerToken(options.token));
  }
  interceptors.push(...(options.interceptors ?? []));

  const nodeOptions: { ca?: string | Buffer; servername?: string } = {};
  if (typeof tls === "object") {
    if (tls.caFile !== undefined) {
      nodeOptions.ca = readFileSync(tls.caFile);
    } else if (tls.ca !== undefined) {
      nodeOptions.ca = tls.ca;
    }
    if (tls.serverName !== undefined) {
      nodeOptions.servername = tls.serverName;
    }
  }
  // One HTTP/2 connection, checked with a PING after 30 s without data, so a watch on a
  // connection that died silently fails (and resumes) instead of waiting forever.
  const sessionManager = new Http2SessionManager(baseUrl, { pingIntervalMs: 30_000 }, nodeOptions);
  return {
    transport: createGrpcTransport({ baseUrl, interceptors, sessionManager }),
    close: () => sessionManager.abort(),
  };
}

function baseUrlFor(address: string, tls: boolean): string {
  if (/^https?:\/\//.test(address)) {
    if (tls && address.startsWith("http://")) {
      throw new Error(`address ${address} says http:// but tls is set; use https://`);
    }
    return address.replace(/\/+$/, "");
  }
  return `${tls ? "https" : "http"}://${address}`;
}

function bearerToken(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (next) => (req) => {
    req.header.set("authorization", value);
    return next(req);
  };
}
