"""The scene files of the project's shared data set (``GEOSEG_DATA``: ``buildings/<area>/*.tif``,
``landcover/dubai/tile_N/*.jpg``), by the SHA-256 of their bytes, with each file's size.

Why: its split rules (``tiles.splits``: Kampala and Dubai tile 6 are test ground) belong to these
files, not to names: a user's ``kampala_z19_7.tif`` or ``tile_6/`` folder is another scene, and a
renamed copy of a shared test scene is still test ground. A file changed since falls back to the
default split (train). The sizes let ``tiles.splits.shared_scene`` skip the hash of a file whose size
no shared file has (a user's multi-GB scene was read in full, seconds, only to learn it is not one).
Listed from the data the README describes (HOT fAIr 61f1515, smp0714 86da6fb); to regenerate, in
``GEOSEG_DATA``: ``for p in buildings/*/*.tif landcover/dubai/tile_*/*.jpg; do echo "$(sha256sum <$p |
cut -c1-64) $(stat -c %s $p) $p"; done`` (hash, size in bytes, path), one ``SharedScene`` each.
"""
from typing import NamedTuple


class SharedScene(NamedTuple):
    """One scene file of the shared data set."""

    path: str  # its path in the data set, ``buildings/kampala/kampala_z19_1.tif``
    size: int  # its size in bytes


#: SHA-256 of the file -> its path in the shared data set and its size
SHARED_SCENES: dict[str, SharedScene] = {
    "a28eb02d66983ded0073859aedda7d3feef9584fdadb2371db864e9756314b97": SharedScene("buildings/kampala/kampala_z19_1.tif", 253483),
    "7240d1d9b87056ce05788c4038ce7b3554eaa7be5237a07b5252e0a4b6552313": SharedScene("buildings/kampala/kampala_z19_2.tif", 53868),
    "b8c1ab157b846f4fabefe302bbda1d2e043015098045a2c27905cbba7c4a211d": SharedScene("buildings/kampala/kampala_z20_1.tif", 788361),
    "317d5a33e4ff970484144d17957efe16c13a3aea317f6808f3434a7fb572d635": SharedScene("buildings/kampala/kampala_z20_2.tif", 156743),
    "1930f8974c9410ee5ba4b2f8b89c51f9a751dec21cf902c915b18f9763efb981": SharedScene("buildings/kampala/kampala_z21_1.tif", 2440056),
    "f3a54dd12eb6e6649ff8090cec6696e36f0631d6680a39f83ea42d25f6ece12d": SharedScene("buildings/kampala/kampala_z21_2.tif", 464770),
    "c38469cd722b88d7d0a2ca9605f90c6763fd322cff49923cb2c1e2f2493225a7": SharedScene("buildings/nairobi/nairobi_z19_1.tif", 416361),
    "3a4d5768508bae762be045beb3307e6db2d71bca8bc4a4de94e230ae2ef038b6": SharedScene("buildings/nairobi/nairobi_z19_2.tif", 207298),
    "2a4d1ae7218b1f591a8a2ea7ef833306f7033d5436c52f8f6578c7fe7a05fcbe": SharedScene("buildings/nairobi/nairobi_z20_1.tif", 1160255),
    "5f7757231f30770bb1c16aa6ec88535af481d7b15f933151dd05fb5b6f59847a": SharedScene("buildings/nairobi/nairobi_z20_2.tif", 592268),
    "39545861edbf15e115dffdcc58f423def6631556136d8e29548d1d1697b67936": SharedScene("buildings/nairobi/nairobi_z21_1.tif", 2995511),
    "029416e4b5109b39e4b88cff7e91098e349a120160798813d5d88c3de9dc3da2": SharedScene("buildings/nairobi/nairobi_z21_2.tif", 1570741),
    "50b62c1add074b75c6bc68ca3181bb4b0bc3f5a4f5d75c0d1f872e9644413789": SharedScene("buildings/zanzibar/zanzibar_z19_1.tif", 666100),
    "9a28d5505b71570ccc828deeb5e71154b0741d4d97bc1a3661c9ab3b07ade8b2": SharedScene("buildings/zanzibar/zanzibar_z19_2.tif", 393344),
    "318680142e660419f895dad116ca62a4c96152d5d0c37f71e3dab6c54eacb1db": SharedScene("buildings/zanzibar/zanzibar_z20_1.tif", 2342721),
    "92ce597f309b063e64f92b1c8303136268dfaa2b0e7703a2b0f5a1a615415449": SharedScene("buildings/zanzibar/zanzibar_z20_2.tif", 1348515),
    "98370d581d9cdc6baea7602d3517e8ea7aa53c18eea4ffa273f40b2a22a565e4": SharedScene("buildings/zanzibar/zanzibar_z21_1.tif", 7586837),
    "d4dfcc851821a94fc95c2d41cd1466d56e98dd4e9b97f7af510a5f0e9a429c4c": SharedScene("buildings/zanzibar/zanzibar_z21_2.tif", 4332160),
    "d71fec99b30364f10c09471e7de0cd612f33886ba64c896cd7f619b8610f4121": SharedScene("landcover/dubai/tile_1/image_part_001.jpg", 147167),
    "30fbb754ba9d82e86d774ba0e9c27354dabc4f57ebc4e12f2168095c769e0a4a": SharedScene("landcover/dubai/tile_1/image_part_002.jpg", 136801),
    "6148081ed5f009e2129ad299fd292dbce8549f72e3f229f33e8dfda73ac3b178": SharedScene("landcover/dubai/tile_1/image_part_003.jpg", 146019),
    "1ec22fac5714b808f883dbd036597925111e183f483f08217cea6b27735283a6": SharedScene("landcover/dubai/tile_1/image_part_004.jpg", 139488),
    "b31531602327e79a49000ce4325fb78cf1545ab49873b7ce9074e0fdd25f16bb": SharedScene("landcover/dubai/tile_1/image_part_005.jpg", 131770),
    "d15025b553b29b4a6d29dcaa1f9fbb66e63305b67662392c1929f45812fccfff": SharedScene("landcover/dubai/tile_1/image_part_006.jpg", 139988),
    "8623e3fdf7489ce6da75326f3d047e6a8267c54c707d454adf7127231826a13f": SharedScene("landcover/dubai/tile_1/image_part_007.jpg", 146863),
    "2df8e3f6bf7b1555d5dbde0ee2acde86e2da8e866f219d6a4d4bc761e5837f48": SharedScene("landcover/dubai/tile_1/image_part_008.jpg", 161169),
    "303e8c8a6f96b67ff2ad24489adb11f2169965d8881708cc5812ad4f7c6dea99": SharedScene("landcover/dubai/tile_1/image_part_009.jpg", 161406),
    "14a5489e0c1ac2af8ec51e1c118baaa536535a7f4aaec18634b2cc8dedccc670": SharedScene("landcover/dubai/tile_2/image_part_001.jpg", 98806),
    "3dbf520992988f53f8f5240b6e95e9035fbf61e7d924c8141befe586b7377ae4": SharedScene("landcover/dubai/tile_2/image_part_002.jpg", 89266),
    "710f0a510f5f194df7df0f947ee036de67e5b50591578976f5cfafa496bb5cb0": SharedScene("landcover/dubai/tile_2/image_part_003.jpg", 81855),
    "16990782ea445c9473c3819c2ecde6101deb941bf3db0eb5328121673a96ad91": SharedScene("landcover/dubai/tile_2/image_part_004.jpg", 79977),
    "5f65a65e5e30757f99dff804049102f54c0d9b215d2f76c6e8949c4cb8131e96": SharedScene("landcover/dubai/tile_2/image_part_005.jpg", 74545),
    "21f02f9dd9f0e856b41d03f99e8d291b15091ffbd84723feefb35465f2e6c1e5": SharedScene("landcover/dubai/tile_2/image_part_006.jpg", 85626),
    "ce567734ae80b65374ca82a1cc79a9bea625c94dc4d59640b2b3bc02c6d82fa4": SharedScene("landcover/dubai/tile_2/image_part_007.jpg", 84234),
    "e3dc9120d52005bd9a977b55755ee1b6cce01d000296cf78d03e781941f122f3": SharedScene("landcover/dubai/tile_2/image_part_008.jpg", 86118),
    "48e8535ea842f8fbe741442c8ce272e1e85d68234660ae204b2034d66698f46b": SharedScene("landcover/dubai/tile_2/image_part_009.jpg", 85465),
    "7abcab76ace7fed31f60c18efe8be2b551e4b964679409ec80aab410c2bf06ce": SharedScene("landcover/dubai/tile_3/image_part_001.jpg", 108551),
    "39458ebaae0ed51ee3e1adad9e29fb0f0e2d905ae3db0e928e88df8352392893": SharedScene("landcover/dubai/tile_3/image_part_002.jpg", 127362),
    "c5dcd6f394fb1c330577a0ad10d625ca4c38e592b9b41bf95d312d1fdff1ec5a": SharedScene("landcover/dubai/tile_3/image_part_003.jpg", 123097),
    "d707910378379fc043c1ebdc5193f7045741a5a25630b8e2b56115e71c74bbaa": SharedScene("landcover/dubai/tile_3/image_part_004.jpg", 88729),
    "69d4e1f0b70a9e4cef66ff3dcf63472eae82a4982917bb7b64a7d182deb72807": SharedScene("landcover/dubai/tile_3/image_part_005.jpg", 96955),
    "9da49e80ec397c82871004cdec6e7fccd25e3f92467ff715f32916280c12779d": SharedScene("landcover/dubai/tile_3/image_part_006.jpg", 119933),
    "1d6df16ed28fca3a73c7a86743bcf3d0994e007aa10dce0a0281f3706be4218a": SharedScene("landcover/dubai/tile_3/image_part_007.jpg", 102181),
    "920419e7b6ec3735455e241226be2b7943ad54cde3cacaa3ec1fe1e73288badb": SharedScene("landcover/dubai/tile_3/image_part_008.jpg", 116446),
    "6dd65a5a88f9703af06553285a7db930ef19e594c60aebc02059ae3b117b44c5": SharedScene("landcover/dubai/tile_3/image_part_009.jpg", 124280),
    "af6a8e1ae2636680039fc5a178b2e91591636a032144fb54a03b1384389b5be3": SharedScene("landcover/dubai/tile_4/image_part_001.jpg", 316641),
    "5c05d67d9ad6117bd5bb2aead7bf82a4761c2cd264bde15e828fc0e2cd904724": SharedScene("landcover/dubai/tile_4/image_part_002.jpg", 334876),
    "c095cd59e405a3d4e0609837a0ce0fb078a6eb5d8fb413d3980a1ceb9373509e": SharedScene("landcover/dubai/tile_4/image_part_003.jpg", 317819),
    "f5d43d2f380f7ce1d1884a2d3e87ad7077f3dd70df04c2607566aa0f283de75b": SharedScene("landcover/dubai/tile_4/image_part_004.jpg", 293232),
    "99603f03c72c20e8e9df9dc6a6079c073d2027e164b08f1af58fcd1e97618690": SharedScene("landcover/dubai/tile_4/image_part_005.jpg", 331680),
    "9cede264f27613bb997f6541108530d4f528d33eb1c35a3718e1152306ec0861": SharedScene("landcover/dubai/tile_4/image_part_006.jpg", 350966),
    "cedc7e3cf45a9a945a7c761f77a6d65fc085798ff3e6275e1da4b45342a29829": SharedScene("landcover/dubai/tile_4/image_part_007.jpg", 327696),
    "58ea854d1b016e81e8650c9212b2ee280054788d6e77529a81ad89350e36ff35": SharedScene("landcover/dubai/tile_4/image_part_008.jpg", 372396),
    "ca46a0b85bc570c24ab74782f208f1bba5c5a24690173dc775889e42c7b6a047": SharedScene("landcover/dubai/tile_4/image_part_009.jpg", 333473),
    "cae1751a2a2d4cc8611d0776f2b02d78b280115814faef6304dc80e52c106073": SharedScene("landcover/dubai/tile_5/image_part_001.jpg", 242164),
    "42aa2821b2d941245feb47230ccbc45c968c61022e740093ddf9f9381fdb20c9": SharedScene("landcover/dubai/tile_5/image_part_002.jpg", 173118),
    "01d5e4fdeab6466f559448f82a9414e97a720c5377d1981a4bca891e324c1488": SharedScene("landcover/dubai/tile_5/image_part_003.jpg", 174246),
    "44c40a6b77c08a86a2884f7386a40b7e356cd51aa24655d1919c706cc2d5e62c": SharedScene("landcover/dubai/tile_5/image_part_004.jpg", 267944),
    "796e62b7915b2f422c35d240fc8ef8ba468a15af76c286677234be354fe25dcf": SharedScene("landcover/dubai/tile_5/image_part_005.jpg", 194631),
    "d8bef4dc156fce9cb208375eef6cc76e4d2a102883a0a1af81a0628b2306b344": SharedScene("landcover/dubai/tile_5/image_part_006.jpg", 143287),
    "78962fd5a229516d295f26f3bff84bf38b2f017ef7cdc53e354c61641b1c7dd1": SharedScene("landcover/dubai/tile_5/image_part_007.jpg", 283213),
    "df327040c930f1fcfdf00a5ac3e50fd26294cf17837a419e35732144833ee668": SharedScene("landcover/dubai/tile_5/image_part_008.jpg", 270055),
    "1ffca71b07bbab7f395de2ac1d760d197418cca9df739505544635a240c420c5": SharedScene("landcover/dubai/tile_5/image_part_009.jpg", 185736),
    "16f25d75ff7735a6234919ad21ca44aed1a94f727a06ffa83d592c375269974e": SharedScene("landcover/dubai/tile_6/image_part_001.jpg", 145332),
    "f0059824e05a6b0ade8e1402ee1f19e44dfe5501ef69a1f87116de27f2c26622": SharedScene("landcover/dubai/tile_6/image_part_002.jpg", 155199),
    "d9b8c2f52c1014246393c02459dc8fd1ca139666c93cf671f395a2dfff527e7c": SharedScene("landcover/dubai/tile_6/image_part_003.jpg", 172617),
    "312c9c9045e676ac22089778e6a39c8a3e5df0ffd3eef22d14ed4dcf3c55013d": SharedScene("landcover/dubai/tile_6/image_part_004.jpg", 130019),
    "330811bc1c4213c8c4227c01d3377287f9d8177ded43a2e8094db19697fe73a8": SharedScene("landcover/dubai/tile_6/image_part_005.jpg", 89732),
    "45cb78879d9276dfad97238af96070c95ed4b1799ed2b2c37f542ce8906259f4": SharedScene("landcover/dubai/tile_6/image_part_006.jpg", 144848),
    "e25d9987df470299ff6659fa3e2614d9df773763cc502f6e55bf68db3db4ed26": SharedScene("landcover/dubai/tile_6/image_part_007.jpg", 146045),
    "b1f342c923d32cb88633417268612b05e154829e98e568dd534bb6cd283a46c5": SharedScene("landcover/dubai/tile_6/image_part_008.jpg", 128784),
    "b97142740e7a055e6ea5c2d2e9cd99744e5a26412e87124440b3089d5f77ef50": SharedScene("landcover/dubai/tile_6/image_part_009.jpg", 98983),
}

#: the sizes in bytes of the shared scene files: a file of any other size is none of them
SHARED_SCENE_SIZES: frozenset[int] = frozenset(scene.size for scene in SHARED_SCENES.values())
