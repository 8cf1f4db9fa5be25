import { config } from "./config";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly path: string,
    detail: string,
  ) {
    super(`${path} answered ${status}: ${detail}`);
    this.name = "ApiError";
  }
}

export interface ServerTimingEntry {
  name: string;
  duration: number;
}

export interface Timed<T> {
  data: T;
  /** The `Server-Timing` response header; readable only when CORS exposes it. */
  serverTimingHeader: string | null;
  /** The same timings from the Resource Timing API (needs `Timing-Allow-Origin` cross-origin). */
  serverTiming: ServerTimingEntry[];
}

/** The resource-timing entry of the request just made: entries are queued after the body is read. */
async function resourceServerTiming(url: string, seen: number): Promise<ServerTimingEntry[]> {
  for (let attempt = 0; attempt < 40; attempt += 1) {
    const entries = performance.getEntriesByName(url, "resource") as PerformanceResourceTiming[];
    if (entries.length > seen) {
      return entries[entries.length - 1].serverTiming.map(({ name, duration }) => ({ name, duration }));
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return [];
}

export async function api<T>(path: string, init?: RequestInit): Promise<Timed<T>> {
  const url = config.apiBase + path;
  const seen = performance.getEntriesByName(url, "resource").length;
  const response = await fetch(url, init);
  const serverTimingHeader = response.headers.get("Server-Timing");
  const body: unknown = await response.json().catch(() => null);
  const serverTiming = await resourceServerTiming(url, seen);
  if (!response.ok) {
    const detail = (body as { detail?: unknown } | null)?.detail;
    throw new ApiError(response.status, path, typeof detail === "string" ? detail : response.statusText);
  }
  return { data: body as T, serverTimingHeader, serverTiming };
}

/** A third-party read (a public status feed): no trace headers go there. */
export async function serviceStatus(): Promise<string> {
  if (!config.statusUrl) return "unknown";
  const response = await fetch(config.statusUrl);
  const body = (await response.json()) as { status?: string };
  return body.status ?? "unknown";
}

export interface Account {
  name: string;
  world: number;
  created: string;
  access?: string[];
}

export interface BuildAdvice {
  advice: string;
  model: string;
  finish_reason: string | null;
  input_tokens: number;
  output_tokens: number;
}
