"""The synthetic world's words (:mod:`larr.data.synth` draws from them): categories and their traits, the phrases
and nouns shop names and descriptions are made of, the scene concepts with their paraphrases, the search queries,
and the glosses :func:`larr.data.synth.generate` writes into knowledge.txt.

Changing any of them changes every generated dataset (the draws index into these tables in their order).
"""

from __future__ import annotations

# category -> traits
CATEGORIES: dict[str, tuple[str, ...]] = {
    "noodles": ("hot", "lunch", "comfort"),
    "hotpot": ("hot", "dinner", "group", "comfort"),
    "soup": ("hot", "comfort", "light"),
    "coffee": ("morning", "drink", "work"),
    "bubble tea": ("cold", "drink", "sweet", "afternoon"),
    "bakery": ("morning", "sweet", "light"),
    "burgers": ("fast", "lunch", "late"),
    "pizza": ("group", "dinner", "late"),
    "salad": ("healthy", "light", "cold", "lunch"),
    "barbecue skewers": ("late", "group", "dinner"),
    "ice cream": ("cold", "sweet", "afternoon"),
    "sushi": ("healthy", "lunch", "dinner"),
}

TRAIT_PHRASES: dict[str, tuple[str, ...]] = {
    "hot": ("steaming hot dishes that warm you up on a cold or rainy day", "served piping hot"),
    "cold": ("chilled and refreshing, perfect on a hot summer day", "served ice cold"),
    "comfort": ("hearty comfort food", "cosy meals for staying in"),
    "morning": ("open early for breakfast", "the best way to start the morning"),
    "lunch": ("quick lunch sets", "a popular lunch spot"),
    "dinner": ("a full dinner menu", "great for an evening meal"),
    "afternoon": ("an afternoon treat", "a favourite afternoon break"),
    "late": ("open late into the night", "a midnight snack favourite"),
    "group": ("big portions to share with friends", "party platters for groups"),
    "healthy": ("light and healthy choices", "fresh, low calorie and good after a workout"),
    "light": ("a light meal", "easy on the stomach"),
    "fast": ("fast food delivered in minutes", "quick and filling"),
    "drink": ("freshly made drinks", "drinks to go"),
    "work": ("fuel for a busy working day", "a favourite at the office"),
    "sweet": ("sweet treats and desserts", "for people with a sweet tooth"),
}

CATEGORY_NOUNS: dict[str, tuple[str, ...]] = {
    "noodles": ("Noodle House", "Ramen Bar", "Noodle Kitchen", "Pho Corner"),
    "hotpot": ("Hotpot", "Hot Pot Garden", "Hotpot Palace"),
    "soup": ("Soup Kitchen", "Broth Bar", "Soup Pot"),
    "coffee": ("Coffee", "Espresso Bar", "Coffee Roasters"),
    "bubble tea": ("Bubble Tea", "Milk Tea", "Boba Shop"),
    "bakery": ("Bakery", "Bread House", "Pastry Shop"),
    "burgers": ("Burgers", "Burger Joint", "Grill Burgers"),
    "pizza": ("Pizza", "Pizzeria", "Pizza Oven"),
    "salad": ("Salad Bar", "Green Bowl", "Salads"),
    "barbecue skewers": ("BBQ Skewers", "Barbecue", "Skewer House"),
    "ice cream": ("Ice Cream", "Gelato", "Frozen Treats"),
    "sushi": ("Sushi", "Sushi Bar", "Maki House"),
}

NAME_PREFIXES = (
    "Golden", "Uncle Li's", "Happy", "Red Lantern", "Lucky", "Old Town", "Jade", "Sunny", "Blue Door",
    "Corner", "Grandma's", "Little", "Urban", "Royal", "Twin Dragon", "Maple", "Silver", "Harbour",
    "Northside", "Lotus", "Panda", "Tiger", "Star", "Moonlight",
)

# feature -> concept -> (trait weights, paraphrases: the last two are held out of train/valid)
Concept = tuple[dict[str, float], tuple[str, ...]]
SCENE_CONCEPTS: dict[str, dict[str, Concept]] = {
    "time_slot": {
        "morning": ({"morning": 2.0, "drink": 0.5, "late": -1.0, "group": -0.5},
                    ("early morning", "breakfast time", "7 am", "morning commute", "sunrise", "dawn")),
        "noon": ({"lunch": 1.5, "fast": 0.5, "morning": -0.5},
                 ("lunch time", "noon", "midday", "12 pm lunch break", "around midday", "lunch hour")),
        "afternoon": ({"afternoon": 1.5, "sweet": 0.7, "drink": 0.5},
                      ("afternoon", "3 pm", "tea time", "mid afternoon", "after lunch break", "late afternoon")),
        "evening": ({"dinner": 1.5, "group": 0.5, "morning": -0.7},
                    ("evening", "dinner time", "7 pm", "after work", "early evening", "supper time")),
        "night": ({"late": 2.0, "morning": -1.0, "healthy": -0.5},
                  ("late night", "midnight", "after midnight", "1 am", "small hours", "night owl hours")),
    },
    "weather": {
        "rain": ({"hot": 1.5, "comfort": 1.0, "cold": -1.5},
                 ("heavy rain", "rainy", "light rain", "rain showers", "downpour", "pouring rain")),
        "heat": ({"cold": 2.0, "hot": -1.5, "light": 0.5},
                 ("hot and sunny", "heatwave", "scorching", "very hot", "sweltering", "boiling hot")),
        "cold": ({"hot": 1.5, "comfort": 0.8, "cold": -1.5},
                 ("cold", "freezing", "chilly", "icy wind", "frosty", "bitter cold")),
        "mild": ({"healthy": 0.3, "group": 0.2},
                 ("mild", "pleasant", "sunny and mild", "clear skies", "fair weather", "nice weather")),
        "snow": ({"hot": 2.0, "comfort": 1.2, "cold": -2.0},
                 ("snowing", "heavy snow", "snowfall", "light snow", "blizzard", "snow storm")),
    },
    "place": {
        "office": ({"work": 1.5, "fast": 0.8, "light": 0.5, "group": -0.5},
                   ("office", "at work", "workplace", "office tower", "coworking space", "company desk")),
        "home": ({"comfort": 0.8, "group": 0.3},
                 ("home", "at home", "apartment", "my flat", "house", "living room")),
        "campus": ({"sweet": 0.8, "fast": 0.8, "drink": 0.5},
                   ("campus", "university", "dorm", "college library", "student hall", "lecture hall")),
        "gym": ({"healthy": 2.0, "light": 1.0, "sweet": -1.5, "fast": -1.0},
                ("gym", "fitness center", "after workout", "yoga studio", "training session", "running track")),
        "party": ({"group": 2.0, "late": 0.5, "healthy": -0.5},
                  ("party", "friends gathering", "birthday party", "house party", "game night", "celebration")),
    },
}

# category -> search queries (the last two are held out of train/valid)
SEARCH_QUERIES: dict[str, tuple[str, ...]] = {
    "noodles": ("noodles", "ramen", "beef noodle soup", "spicy noodles", "udon", "pho"),
    "hotpot": ("hotpot", "hot pot", "spicy hotpot", "mala hotpot", "fondue broth", "shabu shabu"),
    "soup": ("soup", "chicken soup", "tomato soup", "hot soup", "broth", "miso soup"),
    "coffee": ("coffee", "latte", "americano", "espresso", "cappuccino", "flat white"),
    "bubble tea": ("bubble tea", "milk tea", "boba", "taro milk tea", "pearl tea", "brown sugar boba"),
    "bakery": ("bread", "croissant", "pastry", "bakery", "bagel", "muffin"),
    "burgers": ("burger", "cheeseburger", "fries", "fried chicken burger", "double burger", "chicken nuggets"),
    "pizza": ("pizza", "pepperoni pizza", "margherita", "cheese pizza", "calzone", "pizza slice"),
    "salad": ("salad", "caesar salad", "healthy bowl", "greens", "poke bowl", "quinoa salad"),
    "barbecue skewers": ("bbq", "skewers", "grilled lamb", "barbecue", "kebab", "yakitori"),
    "ice cream": ("ice cream", "gelato", "sundae", "frozen yogurt", "soft serve", "milkshake"),
    "sushi": ("sushi", "sashimi", "maki rolls", "salmon sushi", "nigiri", "california roll"),
}

CONCEPT_GLOSS = {
    ("time_slot", "morning"): "the morning, time for breakfast",
    ("time_slot", "noon"): "noon, time for lunch",
    ("time_slot", "afternoon"): "the afternoon, time for a snack or a drink",
    ("time_slot", "evening"): "the evening, time for dinner",
    ("time_slot", "night"): "late at night, time for a midnight snack",
    ("weather", "rain"): "rainy weather, wet outside",
    ("weather", "heat"): "hot weather, a hot summer day",
    ("weather", "cold"): "cold weather, a cold winter day",
    ("weather", "mild"): "mild weather, neither hot nor cold",
    ("weather", "snow"): "snowy weather, freezing cold outside",
    ("place", "office"): "being at work in an office",
    ("place", "home"): "being at home",
    ("place", "campus"): "being a student on campus",
    ("place", "gym"): "doing sport and exercise",
    ("place", "party"): "a party with a group of friends",
}

TRAIT_WANTS = {
    "hot": "hot food like soup, noodles and hotpot",
    "cold": "cold things like ice cream, iced drinks and salad",
    "comfort": "hearty comfort food",
    "morning": "breakfast, coffee and pastries",
    "lunch": "a quick lunch",
    "dinner": "a full dinner",
    "afternoon": "an afternoon treat",
    "late": "a late night snack like burgers, pizza or barbecue skewers",
    "group": "food to share like pizza, hotpot and barbecue",
    "healthy": "light and healthy food like salad and sushi",
    "light": "a light meal",
    "fast": "fast food",
    "drink": "a drink like coffee or bubble tea",
    "work": "coffee to stay focused",
    "sweet": "something sweet like desserts and bubble tea",
}
