"""Write fruit_train.csv and fruit_test.csv: the small table of configs/fruit_table.yaml.

Made-up fruit measured by hand: two numeric columns (weight, diameter), two text columns
(colour, skin), a sweetness score and the fruit's name as the label. About 4% of the
weights and colours are missing (an empty field or NA), and a few test rows have a colour
no training row has ("brown": a bruised fruit), which the encoder maps to its "other" slot.
Run from the repository root: `python datasets/make_fruit_table.py` (a fixed seed: the
files come out byte for byte the same).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

# name: (weight g mean, sd), (diameter cm mean, sd), {colour: share}, {skin: share}, sweetness
FRUITS = {
    "apple": ((180, 30), (7.5, 0.8), {"red": 0.6, "green": 0.3, "yellow": 0.1},
              {"smooth": 0.9, "rough": 0.1}, 6),
    "banana": ((120, 20), (3.5, 0.4), {"yellow": 0.8, "green": 0.2},
               {"smooth": 1.0}, 7),
    "grape": ((6, 2), (2.0, 0.3), {"purple": 0.6, "green": 0.4},
              {"smooth": 1.0}, 8),
    "lemon": ((100, 15), (6.0, 0.6), {"yellow": 0.95, "green": 0.05},
              {"rough": 0.8, "smooth": 0.2}, 2),
    "orange": ((200, 35), (8.0, 0.7), {"orange": 0.9, "green": 0.1},
               {"rough": 0.9, "smooth": 0.1}, 6),
}  # fmt: skip
HEADER = ["weight_g", "diameter_cm", "color", "skin", "sweetness", "fruit"]
MISSING_SHARE = 0.04


def rows(generator: np.random.Generator, count: int, bruised: float) -> list[list[str]]:
    names = list(FRUITS)
    table = []
    for _ in range(count):
        fruit = names[generator.integers(len(names))]
        (weight, weight_sd), (diameter, diameter_sd), colours, skins, sweet = FRUITS[fruit]
        colour = generator.choice(list(colours), p=list(colours.values()))
        if generator.random() < bruised:
            colour = "brown"
        row = [
            f"{max(1.0, generator.normal(weight, weight_sd)):.1f}",
            f"{max(0.5, generator.normal(diameter, diameter_sd)):.2f}",
            str(colour),
            str(generator.choice(list(skins), p=list(skins.values()))),
            str(int(np.clip(round(generator.normal(sweet, 1.0)), 0, 10))),
            fruit,
        ]
        for column in (0, 2):  # weight and colour go missing now and then
            if generator.random() < MISSING_SHARE:
                row[column] = "" if generator.random() < 0.5 else "NA"
        table.append(row)
    return table


def main(folder: Path = Path(__file__).resolve().parent) -> None:
    generator = np.random.default_rng(14)
    for name, count, bruised in (("fruit_train.csv", 400, 0.0), ("fruit_test.csv", 100, 0.05)):
        with open(folder / name, "w", newline="") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(rows(generator, count, bruised))


if __name__ == "__main__":
    main()
