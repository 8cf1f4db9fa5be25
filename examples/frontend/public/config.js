// Settings of this deployment, read before the app starts. Replace this file when deploying
// (the build does not change): the API origin is the only host that receives trace headers.
window.GW2_CONFIG = {
  apiBase: "http://127.0.0.1:8000",
  sentryDsn: "",
  tracesSampleRate: 0.1,
  statusUrl: "",
};
