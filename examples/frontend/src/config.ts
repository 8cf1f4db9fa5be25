/** Deployment settings from `config.js` (loaded before the bundle), so one build serves every environment. */
export interface Gw2Config {
  /** Origin of the GW2 example backend; the only host that receives trace headers. */
  apiBase: string;
  /** Sentry DSN; empty keeps Sentry off. */
  sentryDsn: string;
  /** Share of user actions traced; the backend follows this decision for trusted origins. */
  tracesSampleRate: number;
  /** A third-party URL the page reads (a public status feed); it must never see trace headers. */
  statusUrl: string;
}

declare global {
  interface Window {
    GW2_CONFIG?: Partial<Gw2Config>;
  }
}

const given = window.GW2_CONFIG ?? {};

export const config: Gw2Config = {
  apiBase: (given.apiBase ?? "http://127.0.0.1:8000").replace(/\/+$/, ""),
  sentryDsn: given.sentryDsn ?? "",
  tracesSampleRate: given.tracesSampleRate ?? 0.1,
  statusUrl: given.statusUrl ?? "",
};

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Requests to the API origin and nothing else: Sentry matches string targets as substrings,
 * so an anchored pattern keeps `http://api:8000` from matching `http://api:80001` or a
 * third-party URL that merely contains the API's address.
 */
export const apiTarget = new RegExp(`^${escapeRegExp(config.apiBase)}/`);
