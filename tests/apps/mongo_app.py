"""FastAPI + pymongo (issue 26 item 4: MongoDB replay). The client is created at import, as
apps do; pymongo connects in the background (handshake, monitor with awaitable hello).

Environment: MONGO_URL (mongodb://127.0.0.1:PORT/?directConnection=true).
MONGO_CHANGE=1 changes the query of GET /people (min age + 1): a replay of a recording made
without it must name the changed filter field.
"""

import os

import pymongo
from fastapi import FastAPI

client = pymongo.MongoClient(os.environ["MONGO_URL"], appname="tt-mongo-app", serverSelectionTimeoutMS=5000)
db = client.app
app = FastAPI()

PEOPLE = [
    {"_id": 1, "name": "ada", "age": 36, "city": "london"},
    {"_id": 2, "name": "bob", "age": 25, "city": "paris"},
    {"_id": 3, "name": "cy", "age": 41, "city": "london"},
    {"_id": 4, "name": "di", "age": 33, "city": "rome"},
    {"_id": 5, "name": "ed", "age": 52, "city": "paris"},
    {"_id": 6, "name": "flo", "age": 30, "city": "london"},
]


@app.get("/seed")
def seed():
    db.people.delete_many({})
    r = db.people.insert_many(PEOPLE)
    # No _id: the driver generates an ObjectId, different on every run.
    db.audit.insert_one({"event": "seed", "n": len(r.inserted_ids)})
    return {"inserted": len(r.inserted_ids)}


@app.get("/people")
def people(min_age: int = 30):
    if os.environ.get("MONGO_CHANGE") == "1":
        min_age += 1
    # batch_size 2: the first batch, then getMore with the cursor id until it is 0.
    cur = db.people.find({"age": {"$gte": min_age}}, {"name": 1, "age": 1}).sort("age", 1).batch_size(2)
    return {"people": [{"name": d["name"], "age": d["age"]} for d in cur]}


@app.get("/birthday/{pid}")
def birthday(pid: int):
    r = db.people.update_one({"_id": pid}, {"$inc": {"age": 1}, "$set": {"celebrated": True}})
    d = db.people.find_one({"_id": pid})
    return {"modified": r.modified_count, "age": d["age"], "celebrated": d["celebrated"]}


@app.get("/stats")
def stats():
    rows = db.people.aggregate([
        {"$match": {"age": {"$gte": 0}}},
        {"$group": {"_id": "$city", "n": {"$sum": 1}, "oldest": {"$max": "$age"}}},
        {"$sort": {"_id": 1}},
    ])
    return {"cities": [{"city": r["_id"], "n": r["n"], "oldest": r["oldest"]} for r in rows],
            "total": db.people.count_documents({})}


@app.get("/remove")
def remove(city: str):
    r = db.people.delete_many({"city": city})
    return {"deleted": r.deleted_count, "left": db.people.count_documents({}),
            "ping": db.command("ping")["ok"]}
