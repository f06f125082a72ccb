"""Candidate features for concepts (the sea, royalty, food, sentiment, ...), with the evidence a
person needs to label them: top-activating contexts on held-out text.

For each concept: the mean activation of every feature on a few hand-written concept sentences
against general held-out text (WikiText-2 test and movie reviews); the best-separating features
that fire on less than ``--max-rate`` of all tokens are candidates, shown with their
top-activating contexts over ``--tokens`` held-out tokens. ``--features`` shows the contexts
of chosen ids instead. A person reads the contexts and names the features with
``steer features label SAE ID NAME --description ...`` (labels.json beside the SAE); this
script writes nothing into the SAE folder.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/find_demo_features.py [--tokens 102400] \
        [--concepts sea,food] [--features 12,345] [--out /tmp/steer-label-candidates.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

CORPUS = Path(os.environ.get("STEER_CORPUS", "/work/shared/corpus"))
DATA = [CORPUS / "wikitext2_raw_test.txt", CORPUS / "labelled/pang_lee_movie_review_polarity.jsonl"]

CONCEPTS = {
    "sea": [
        "Waves rolled onto the beach as the tide came in from the ocean.",
        "Fishermen cast their nets into the deep blue sea.",
        "Coral reefs and fish fill the warm waters of the Pacific Ocean.",
        "The coast was battered by the sea, and the salt spray reached the cliffs.",
        "Dolphins and whales swam in the open ocean far from the shore.",
    ],
    "ships": [
        "The ship sailed across the ocean, its sails full of wind.",
        "The fleet of ships left port and headed out to sea.",
        "The captain steered the vessel through the storm.",
        "The navy sent three warships and a destroyer to the harbour.",
        "The sailors loaded the cargo onto the boat at the dock.",
    ],
    "royalty": [
        "The king and queen greeted the prince at the royal palace.",
        "The monarch was crowned in a ceremony attended by the whole kingdom.",
        "Queen Victoria ruled the British Empire for more than sixty years.",
        "The princess married a duke, and the royal family celebrated.",
        "After the king died, his eldest son inherited the throne.",
    ],
    "food": [
        "She baked a loaf of bread and made a pot of vegetable soup for dinner.",
        "Add the chopped onions and garlic to the pan and fry them in butter.",
        "We ate pasta with tomato sauce and cheese at the restaurant.",
        "For breakfast he had fried eggs, bacon and a cup of coffee.",
        "The chef roasted the chicken and served it with potatoes and salad.",
    ],
    "sports": [
        "The team scored two goals in the second half and won the match.",
        "He hit a home run in the ninth inning to win the baseball game.",
        "The striker passed the ball and the goalkeeper made a save.",
        "She won the gold medal in the hundred metres at the Olympics.",
        "The coach said the players had trained hard for the championship.",
    ],
    "science": [
        "The scientists measured the reaction rate in the laboratory experiment.",
        "The researchers published their hypothesis and data in a physics journal.",
        "Electrons, protons and neutrons make up the atom.",
        "The chemist mixed the two compounds and observed the molecules.",
        "The theory was tested by experiment and confirmed by the measurements.",
    ],
    "weather": [
        "Heavy rain and strong winds are expected tomorrow, with thunderstorms.",
        "The storm brought snow and freezing temperatures to the region.",
        "A hurricane with winds of 120 miles per hour made landfall.",
        "The forecast is sunny with a few clouds and a light breeze.",
        "Fog and drizzle covered the valley after the storm.",
    ],
    "music": [
        "The band played guitar and drums while the singer sang the chorus.",
        "Her new album reached number one on the singles chart.",
        "The orchestra performed a symphony by Beethoven.",
        "He wrote the lyrics and recorded the song in the studio.",
        "The concert featured rock music and a piano solo.",
    ],
    "war": [
        "The army attacked the enemy positions and the soldiers advanced.",
        "The troops fought a fierce battle and suffered heavy casualties.",
        "The infantry division was ordered to defend the front line.",
        "Artillery shelled the town before the invasion began.",
        "The general commanded the forces during the war.",
    ],
    "religion": [
        "The priest led the prayer in the church on Sunday.",
        "The bishop consecrated the new cathedral.",
        "Believers worship God and read the Bible.",
        "The monks lived in the monastery and prayed daily.",
        "The temple was dedicated to the gods of the ancient religion.",
    ],
    "politics": [
        "The senator voted against the bill in Congress.",
        "The party won the election and formed a new government.",
        "The prime minister announced a new policy to parliament.",
        "Voters elected the candidate as governor of the state.",
        "The president signed the law after the Senate passed it.",
    ],
    "medicine": [
        "The doctor examined the patient and prescribed medicine.",
        "The hospital treated the disease with a new drug.",
        "Symptoms of the infection include fever and cough.",
        "The surgeon performed the operation on the patient's heart.",
        "Nurses cared for patients in the clinic.",
    ],
    "computers": [
        "The software runs on the computer and stores data in memory.",
        "Programmers wrote the code and fixed the bugs in the program.",
        "The internet connects millions of computers and servers.",
        "Click the button to download the file and install the application.",
        "The processor executes instructions and the operating system manages files.",
    ],
    "money": [
        "The company reported profits of ten million dollars this year.",
        "He paid for the house with a loan from the bank.",
        "The price of shares rose on the stock market.",
        "Taxes and costs reduced the revenue of the business.",
        "She saved money and invested it in bonds.",
    ],
    "animals": [
        "The fox chased the rabbit across the field.",
        "Wolves, bears and deer live in the forest.",
        "The cat caught a mouse and the dog barked.",
        "Lions and elephants roam the African savanna.",
        "The species of frog lives near rivers and eats insects.",
    ],
    "birds": [
        "The birds built a nest in the tree and laid eggs.",
        "Eagles, hawks and owls are birds of prey.",
        "The parrot spread its wings and its feathers were bright.",
        "Sparrows and pigeons flew over the city.",
        "The species of bird migrates south for the winter.",
    ],
    "france": [
        "Paris is the capital of France and home to the Eiffel Tower.",
        "The French government in Paris announced a new law.",
        "They drank French wine in a small village in Provence.",
        "Napoleon was emperor of the French.",
        "Lyon and Marseille are large cities in France.",
    ],
    "family": [
        "Her mother and father raised three children.",
        "His brother and sister visited their grandparents.",
        "The couple married and had a son and a daughter.",
        "She is the aunt of my cousin and the wife of my uncle.",
        "The parents took their kids to school.",
    ],
    "crime": [
        "The police arrested the suspect for murder.",
        "The thief was charged with robbery and sent to prison.",
        "The jury found the defendant guilty of the crime.",
        "Detectives investigated the shooting and the killer fled.",
        "He was convicted and sentenced to ten years in jail.",
    ],
    "school": [
        "The students studied for their exams at the university.",
        "The teacher taught the class mathematics.",
        "She graduated from college with a degree in history.",
        "Pupils at the school learn to read and write.",
        "The professor gave a lecture to the students.",
    ],
    "space": [
        "The astronauts flew to the Moon aboard the spacecraft.",
        "The telescope observed distant galaxies and stars.",
        "Mars and Jupiter are planets of the solar system.",
        "The rocket launched the satellite into orbit.",
        "The comet passed close to the Sun.",
    ],
    "plants": [
        "The garden was full of roses, tulips and other flowers.",
        "The trees lost their leaves in autumn.",
        "Farmers planted wheat and corn in the fields.",
        "The plant grows seeds and its roots absorb water.",
        "Oak, pine and maple trees grow in the forest.",
    ],
    "vehicles": [
        "He drove the car down the highway and parked it.",
        "The truck and the bus stopped at the traffic lights.",
        "The train left the station and arrived at the next stop.",
        "The engine of the motorcycle roared.",
        "Passengers boarded the railway carriages.",
    ],
    "film": [
        "The movie stars a famous actor and was directed by Spielberg.",
        "The film's plot and characters were praised by critics.",
        "The director cast her in the lead role of the film.",
        "The sequel was released in cinemas last summer.",
        "The screenplay and the special effects were impressive.",
    ],
    "books": [
        "The novel was written by a famous author.",
        "She published her first book of poems.",
        "The chapter describes the hero's journey.",
        "The writer's stories were printed in a magazine.",
        "He read the novel and enjoyed the plot.",
    ],
    "praise": [
        "This is a wonderful, brilliant and beautiful film.",
        "The performances are excellent and the story is delightful.",
        "I loved it; it is one of the best movies of the year.",
        "A superb, moving and thoroughly enjoyable experience.",
        "The acting is terrific and the music is magnificent.",
    ],
    "criticism": [
        "This is a boring, stupid and awful film.",
        "The plot is a mess and the acting is terrible.",
        "I hated it; it is one of the worst movies of the year.",
        "A dull, pointless and painfully bad experience.",
        "The script is lame and the jokes fall flat.",
    ],
    "formal": [
        "Pursuant to the agreement, the parties shall hereby comply with the provisions.",
        "We respectfully request that the committee consider the aforementioned proposal.",
        "The board of directors hereby resolves to approve the amendment.",
        "Furthermore, the applicant must submit the documentation in accordance with regulations.",
        "Please be advised that the meeting has been rescheduled accordingly.",
    ],
    "sadness": [
        "She cried and felt lonely and sad after he left.",
        "The tragic death of their son left them grieving.",
        "He was depressed and full of sorrow.",
        "Tears ran down her face as she mourned her friend.",
        "The funeral was a sad and painful day.",
    ],
    "love": [
        "They fell in love and kissed under the stars.",
        "He loved her and wanted to marry her.",
        "The romance between the two lovers blossomed.",
        "She was his girlfriend and they dated for years.",
        "A romantic love story about a couple.",
    ],
    "fear": [
        "The horror film was terrifying and full of monsters.",
        "She screamed in fear as the ghost appeared.",
        "The scary creature attacked the victims at night.",
        "A frightening tale of a haunted house and a killer.",
        "He was afraid of the dark and the nightmares.",
    ],
    "rivers": [
        "The river flows through the valley into the lake.",
        "The bridge crosses the river near the waterfall.",
        "The stream and its tributaries drain the mountains.",
        "Floods raised the water level of the river.",
        "The canal connects the river to the reservoir.",
    ],
    "mountains": [
        "The climbers reached the summit of the mountain.",
        "The peak rises above the valley and the hills.",
        "Snow covered the slopes of the Alps.",
        "The mountain range stretches along the border.",
        "They hiked along the ridge to the top of the hill.",
    ],
    "buildings": [
        "The church has a tower, a nave and stained glass windows.",
        "The architect designed the building with stone walls.",
        "The castle was built in the twelfth century.",
        "The house has three floors and a large roof.",
        "The bridge and the building were constructed of brick.",
    ],
    "history": [
        "The Roman Empire conquered much of Europe.",
        "In the Middle Ages, the castle was built by the knights.",
        "The ancient Egyptians built the pyramids.",
        "The dynasty ruled China for centuries.",
        "Medieval kings fought over the territory.",
    ],
    "time": [
        "The meeting is on Monday at three o'clock.",
        "In January, February and March the weather is cold.",
        "She was born in 1985 and moved in 2001.",
        "Every morning and evening he walks the dog.",
        "The event happened last week, two days before Christmas.",
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sae", default="smollm2-135m-res12-topk")
    ap.add_argument("--tokens", type=int, default=102_400)
    ap.add_argument("--per-concept", type=int, default=3)
    ap.add_argument("--contexts", type=int, default=8)
    ap.add_argument("--max-rate", type=float, default=0.02, help="skip features firing more")
    ap.add_argument("--concepts", default=None, help="comma-separated subset of the concepts")
    ap.add_argument("--features", default=None, help="comma-separated ids: show their contexts")
    ap.add_argument("--out", default="/tmp/steer-label-candidates.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from steer.corpus.documents import read_documents
    from steer.corpus.windows import pack_windows
    from steer.model.positions import OutlierFilter, keep_mask, special_token_ids
    from steer.model.trace import layer_output
    from steer.sae.labels import load_labels
    from steer.sae.loading import load_sae_and_model
    from steer.training.activations import iter_activations

    folder, sae, model = load_sae_and_model(args.sae, device="cpu")
    labels = load_labels(folder)
    layer = sae.cfg.layer
    tok = model.tokenizer
    special = torch.tensor(special_token_ids(tok))
    k = int(getattr(sae.cfg, "k", None) or 64)

    # Held-out text, half from each file: top-k codes of every kept token.
    windows = []
    for path in DATA:
        packed = pack_windows(tok, read_documents(path, tok), 128)
        windows.append(packed[: args.tokens // (128 * len(DATA))])
    windows = torch.cat(windows)
    codes_v, codes_i, where = [], [], []
    general_sum = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    general_fire = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    n_general = 0
    with torch.no_grad():
        for batch in iter_activations(model, layer, windows, batch_windows=16):
            f = sae.encode(batch.acts)
            top = f.topk(k, dim=-1)
            codes_v.append(top.values.half())
            codes_i.append(top.indices.int())
            where.append(torch.stack([batch.window, batch.position], 1))
            general_sum += f.double().sum(0)
            general_fire += (f > 0).double().sum(0)
            n_general += len(f)
    codes_v, codes_i, where = torch.cat(codes_v), torch.cat(codes_i), torch.cat(where)
    general_mean = general_sum / n_general
    rate = general_fire / n_general
    print(f"held-out tokens: {n_general}")

    def concept_codes(sentences: list[str]) -> tuple[torch.Tensor, list[str]]:
        # One passage, not sentence by sentence: the first positions after a document start
        # carry large position-specific activations that would swamp short sentences.
        ids = tok(" ".join(sentences), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[0, *ids]])  # a leading separator, as in the packed training data
        h = layer_output(model, layer, ids)
        keep = keep_mask(ids, h, special, OutlierFilter())
        keep[:, :4] = False
        with torch.no_grad():
            codes = sae.encode(h[keep])
        return codes, [tok.decode([i]) for i in ids[keep].tolist()]

    def top_contexts(feature: int, n: int) -> list[dict]:
        hit = codes_i == feature
        vals = torch.where(hit, codes_v.float(), torch.zeros(())).max(1).values
        out, seen = [], set()
        for r in vals.topk(n * 4).indices.tolist():
            if vals[r] <= 0 or len(out) >= n:
                break
            w, p = where[r].tolist()
            ids = windows[w].tolist()
            context = (
                f"{tok.decode(ids[max(0, p - 14) : p])}[[{tok.decode([ids[p]])}]]"
                f"{tok.decode(ids[p + 1 : p + 5])}"
            )
            if context in seen:
                continue
            seen.add(context)
            out.append({"act": round(float(vals[r]), 1), "context": " ".join(context.split())})
        return out

    def describe(fid: int) -> dict:
        entry = {
            "feature": fid,
            "label": labels[fid].name if fid in labels else None,
            "general_fire_rate": round(float(rate[fid]), 5),
            "top_contexts": top_contexts(fid, args.contexts),
        }
        print(
            f"feature {fid}{' (' + entry['label'] + ')' if entry['label'] else ''}: "
            f"fires on {entry['general_fire_rate']:.3%} of tokens"
        )
        for c in entry["top_contexts"]:
            print(f"    {c['act']:6.1f}  {c['context']!r}")
        return entry

    report: dict = {"sae": folder.name, "held_out_tokens": n_general, "concepts": {}}
    if args.features:
        report["features"] = [describe(int(f)) for f in args.features.split(",")]
    else:
        chosen = args.concepts.split(",") if args.concepts else list(CONCEPTS)
        for concept in chosen:
            codes, words = concept_codes(CONCEPTS[concept])
            cm = codes.double().mean(0)
            # Features that fire on a large share of all text (position, syntax) are no concept.
            score = torch.where(rate < args.max_rate, cm - general_mean, -1e9)
            print(f"\n=== {concept}")
            report["concepts"][concept] = []
            for fid in score.topk(args.per_concept).indices.tolist():
                on = [
                    f"{words[i]}:{v:.0f}"
                    for v, i in zip(*codes[:, fid].topk(6), strict=True)
                    if v > 0
                ]
                print(f"  concept mean {cm[fid]:.2f}; on the sentences: {', '.join(on)}")
                entry = describe(fid)
                entry.update(concept_mean=round(float(cm[fid]), 3), concept_tokens=on)
                report["concepts"][concept].append(entry)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
