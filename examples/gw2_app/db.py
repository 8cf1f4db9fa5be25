"""The relational store: accounts seen through the API and an item catalogue.

Synchronous SQLAlchemy on purpose: it is what most services run, and route handlers reach it
through a thread pool so the event loop never blocks on the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from .settings import settings

SEED_ITEMS = (
    (19721, "Glob of Ectoplasm", "CraftingMaterial", "Exotic", 0),
    (19976, "Mystic Coin", "CraftingMaterial", "Rare", 0),
    (19684, "Mithril Ingot", "CraftingMaterial", "Basic", 0),
)


class Base(DeclarativeBase):
    pass


class Account(Base):
    """The last known state of a GW2 account; keyed by the account GUID, never the API key."""

    __tablename__ = "gw2_accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    world: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Item(Base):
    """A catalogue row, filled from the seed list and from GW2 on a miss."""

    __tablename__ = "gw2_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    rarity: Mapped[str] = mapped_column(String(16))
    level: Mapped[int] = mapped_column(Integer, default=0)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "type": self.type, "rarity": self.rarity, "level": self.level}


engine = create_engine(settings.database_url, pool_pre_ping=True)
Session = sessionmaker(engine, expire_on_commit=False)


def create_tables() -> None:
    """Create the schema and seed the catalogue; safe to run at every start."""
    Base.metadata.create_all(engine)
    with Session.begin() as session:
        if session.scalar(select(func.count()).select_from(Item)) == 0:
            session.add_all(Item(id=i, name=n, type=t, rarity=r, level=lvl) for i, n, t, r, lvl in SEED_ITEMS)


def upsert_account(data: dict[str, Any]) -> None:
    """Record the account behind a key; ``merge`` keeps this portable across SQLite and PG."""
    with Session.begin() as session:
        session.merge(
            Account(id=data["id"], name=data["name"], world=data.get("world", 0), updated_at=datetime.now(UTC))
        )


def get_item(item_id: int) -> dict[str, Any] | None:
    with Session() as session:
        item = session.get(Item, item_id)
        return item.as_dict() if item else None


def save_item(data: dict[str, Any]) -> None:
    with Session.begin() as session:
        session.merge(
            Item(
                id=data["id"],
                name=data["name"],
                type=data.get("type", "Unknown"),
                rarity=data.get("rarity", "Basic"),
                level=data.get("level", 0),
            )
        )


def ping() -> None:
    """Readiness: a round trip to the database; raises when it is unreachable."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
