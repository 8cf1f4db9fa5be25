import { type FormEvent, useState } from "react";

import { type Account, ApiError, type BuildAdvice, type ServerTimingEntry, api, serviceStatus } from "./api";
import { userAction } from "./telemetry";

const PROFESSIONS = ["Guardian", "Warrior", "Engineer", "Ranger", "Thief", "Elementalist", "Mesmer", "Necromancer", "Revenant"];
const GAME_MODES = ["pve", "fractals", "raids", "wvw", "pvp"] as const;

function Timings({ header, entries }: { header: string | null; entries: ServerTimingEntry[] }) {
  return (
    <p className="timings">
      <span data-testid="server-timing-header">{header ?? ""}</span>
      {" · "}
      <span data-testid="server-timing">{entries.map((e) => `${e.name}=${e.duration}`).join(";")}</span>
    </p>
  );
}

function errorText(error: unknown): string {
  return error instanceof ApiError ? error.message : "something went wrong";
}

function AccountLookup({ apiKey, setApiKey }: { apiKey: string; setApiKey: (key: string) => void }) {
  const [account, setAccount] = useState<Account | null>(null);
  const [status, setStatus] = useState("");
  const [timing, setTiming] = useState<{ header: string | null; entries: ServerTimingEntry[] }>({ header: null, entries: [] });
  const [error, setError] = useState("");
  const [lookups, setLookups] = useState(0);

  async function lookUp(event: FormEvent) {
    event.preventDefault();
    setError("");
    try {
      await userAction("account lookup", async () => {
        const result = await api<Account>("/api/account", { headers: { "X-GW2-Key": apiKey } });
        setAccount(result.data);
        setTiming({ header: result.serverTimingHeader, entries: result.serverTiming });
        setStatus(await serviceStatus());
      });
    } catch (caught) {
      setError(errorText(caught));
    } finally {
      setLookups((count) => count + 1);
    }
  }

  return (
    <section>
      <h2>Account</h2>
      <form onSubmit={lookUp}>
        <input
          aria-label="API key"
          placeholder="GW2 API key"
          value={apiKey}
          onChange={(event) => setApiKey(event.target.value)}
          autoComplete="off"
        />
        <button type="submit">Look up</button>
      </form>
      <output data-testid="lookups" data-count={lookups} />
      {account && (
        <p data-testid="account">
          {account.name} (world {account.world})
        </p>
      )}
      {status && <p data-testid="service-status">GW2 services: {status}</p>}
      <Timings header={timing.header} entries={timing.entries} />
      {error && <p role="alert">{error}</p>}
    </section>
  );
}

function BuildAdvisor() {
  const [profession, setProfession] = useState(PROFESSIONS[0]);
  const [gameMode, setGameMode] = useState<(typeof GAME_MODES)[number]>("fractals");
  const [question, setQuestion] = useState("");
  const [advice, setAdvice] = useState<BuildAdvice | null>(null);
  const [error, setError] = useState("");

  async function ask(event: FormEvent) {
    event.preventDefault();
    setError("");
    try {
      const result = await userAction("build advice", () =>
        api<BuildAdvice>("/api/ai/build-advice", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ profession, game_mode: gameMode, question: question || null }),
        }),
      );
      setAdvice(result.data);
    } catch (caught) {
      setError(errorText(caught));
    }
  }

  return (
    <section>
      <h2>Ask the AI</h2>
      <form onSubmit={ask}>
        <select aria-label="Profession" value={profession} onChange={(event) => setProfession(event.target.value)}>
          {PROFESSIONS.map((name) => (
            <option key={name}>{name}</option>
          ))}
        </select>
        <select
          aria-label="Game mode"
          value={gameMode}
          onChange={(event) => setGameMode(event.target.value as (typeof GAME_MODES)[number])}
        >
          {GAME_MODES.map((mode) => (
            <option key={mode}>{mode}</option>
          ))}
        </select>
        <input
          aria-label="Question"
          placeholder="Anything specific?"
          maxLength={500}
          value={question}
          onChange={(event) => setQuestion(event.target.value)}
        />
        <button type="submit">Ask</button>
      </form>
      {advice && (
        <p data-testid="advice">
          {advice.advice} <small>({advice.model})</small>
        </p>
      )}
      {error && <p role="alert">{error}</p>}
    </section>
  );
}

interface Character {
  name: string;
  profession: string;
  level: number;
}

/** One character of the account; an upstream failure is shown and reported with the trace it ended. */
function CharacterLookup({ apiKey }: { apiKey: string }) {
  const [name, setName] = useState("");
  const [character, setCharacter] = useState<Character | null>(null);
  const [error, setError] = useState("");

  async function lookUp(event: FormEvent) {
    event.preventDefault();
    setError("");
    setCharacter(null);
    try {
      const result = await userAction("character lookup", () =>
        api<Character>(`/api/characters/${encodeURIComponent(name)}`, { headers: { "X-GW2-Key": apiKey } }),
      );
      setCharacter(result.data);
    } catch (caught) {
      setError(errorText(caught));
    }
  }

  return (
    <section>
      <h2>Character</h2>
      <form onSubmit={lookUp}>
        <input aria-label="Character name" placeholder="Character name" value={name} onChange={(e) => setName(e.target.value)} />
        <button type="submit">Show character</button>
      </form>
      {character && (
        <p data-testid="character">
          {character.name}: level {character.level} {character.profession}
        </p>
      )}
      {error && (
        <p role="alert" data-testid="character-error">
          {error}
        </p>
      )}
    </section>
  );
}

export function App() {
  const [apiKey, setApiKey] = useState("");
  return (
    <main>
      <h1>GW2 companion</h1>
      <AccountLookup apiKey={apiKey} setApiKey={setApiKey} />
      <CharacterLookup apiKey={apiKey} />
      <BuildAdvisor />
    </main>
  );
}
